"""The Pier jobs layout (Harbor 0.25.0 ``jobs/``): schema validity, stats, links, concurrency."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from harbor_schemas import find_reference
from harbor_schemas import validate as validate_schema

from pytest_evalrun import __version__ as evalrun_version
from pytest_evalrun.experiment.model import Experiment, Step, Task, Variant
from pytest_evalrun.outcome import ERROR, FAILED, PASSED, TIMEOUT, Metrics, TrialOutcome
from pytest_evalrun.store.pier import PierJob, link_file, split_model
from pytest_evalrun.store.pier import jobnames as pier_names
from pytest_evalrun.store.pier.config import agent_version
from pytest_evalrun.store.pier.jobnames import safe_job_name, trial_name_for
from pytest_evalrun.store.pier.jobstats import compute_job_stats
from pytest_evalrun.store.pier.trajectory import events_to_trajectory

# --------------------------------------------------------------------------- schemas

REFERENCE = find_reference()
needs_reference = pytest.mark.skipif(
    REFERENCE is None and not os.environ.get("CI"), reason="Harbor reference schemas absent"
)


def validate(schema_name: str, instance: Any, *, strict: bool = True) -> None:
    """Validate against one of Harbor's schemas as published (objects open); ``strict``:
    datetimes as we write them (RFC 3339 with an offset), else as Harbor writes them."""
    validate_schema(schema_name, instance, closed=False, strict_datetime=strict)


def validate_job_dir(job_dir: Path, *, strict: bool = True) -> dict[str, int]:
    """Validate every JSON file of a Harbor job directory; returns counts of what was checked."""
    counts = {"job": 0, "trial": 0, "trajectory": 0}
    validate("JobConfig", json.loads((job_dir / "config.json").read_text()), strict=strict)
    job_result = json.loads((job_dir / "result.json").read_text())
    validate("JobResult", job_result, strict=strict)
    counts["job"] += 1
    for trial in sorted(p for p in job_dir.iterdir() if p.is_dir()):
        config = json.loads((trial / "config.json").read_text())
        result = json.loads((trial / "result.json").read_text())
        validate("TrialConfig", config, strict=strict)
        validate("TrialResult", result, strict=strict)
        assert result["trial_name"] == trial.name == config["trial_name"]
        assert result["config"] == config
        if result["config"].get("job_id") is not None:
            assert result["config"]["job_id"] == job_result["id"]
        counts["trial"] += 1
        trajectory = trial / "agent" / "trajectory.json"
        if trajectory.exists():
            validate("Trajectory", json.loads(trajectory.read_text()), strict=strict)
            counts["trajectory"] += 1
    return counts


# --------------------------------------------------------------------------- independent stats


def _key(result: Mapping[str, Any]) -> str:
    info = result["agent_info"]
    model = info["model_info"]["name"] if info.get("model_info") else None
    source = result.get("source") or "adhoc"
    return f"{info['name']}__{model}__{source}" if model else f"{info['name']}__{source}"


def independent_stats(results: list[dict[str, Any]], n_total: int) -> dict[str, Any]:
    """Harbor's JobStats, re-derived here from its source, not from the module under test."""
    stats: dict[str, Any] = {
        "n_completed_trials": len(results),
        "n_errored_trials": sum(1 for r in results if r.get("exception_info")),
        "n_pending_trials": max(n_total - len(results), 0),
        "evals": {},
    }
    for field in ("n_input_tokens", "n_cache_tokens", "n_output_tokens", "cost_usd"):
        values: list[Any] = [(r.get("agent_result") or {}).get(field) for r in results]
        present = [v for v in values if v is not None]
        stats[field] = sum(present) if present else None
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(_key(r), []).append(r)
    for key, members in groups.items():
        rewards = [(m.get("verifier_result") or {}).get("rewards") for m in members]
        reward_stats: dict[str, dict[str, list[str]]] = {}
        exception_stats: dict[str, list[str]] = {}
        for m, rw in zip(members, rewards, strict=True):
            for name, value in (rw or {}).items():
                reward_stats.setdefault(name, {}).setdefault(str(value), []).append(
                    m["trial_name"]
                )
            if m.get("exception_info"):
                exception_stats.setdefault(m["exception_info"]["exception_type"], []).append(
                    m["trial_name"]
                )
        keys = sorted({k for rw in rewards if rw for k in rw})
        if len(keys) <= 1:
            values = [0 if rw is None else next(iter(rw.values()), 0) for rw in rewards]
            metric: dict[str, float] = {"mean": sum(values) / len(values)}
        else:
            metric = {
                k: sum(0 if rw is None else rw.get(k, 0) for rw in rewards) / len(rewards)
                for k in keys
            }
        # pass@k: one binary reward per trial, k in powers of 2 and multiples of 5.
        per_task: dict[str, list[int]] = {}
        pass_at_k: dict[str, float] = {}
        binary = True
        for m, rw in zip(members, rewards, strict=True):
            if rw is None:
                per_task.setdefault(m["task_name"], []).append(0)
            elif len(rw) != 1 or next(iter(rw.values())) not in (0, 1):
                binary = False
            else:
                per_task.setdefault(m["task_name"], []).append(int(next(iter(rw.values()))))
        if binary and per_task:
            n_min = min(len(v) for v in per_task.values())
            ks = sorted({2**i for i in range(1, 20) if 2**i <= n_min} | set(range(5, n_min + 1, 5)))
            for k in ks:
                values_k = []
                for succ in per_task.values():
                    n, c = len(succ), sum(succ)
                    miss = math.comb(n - c, k) / math.comb(n, k)
                    values_k.append(1.0 if n - c < k else 1.0 - miss)
                pass_at_k[str(k)] = sum(values_k) / len(values_k)
        stats["evals"][key] = {
            "n_trials": sum(1 for rw in rewards if rw is not None),
            "n_errors": sum(1 for m in members if m.get("exception_info")),
            "metrics": [metric],
            "pass_at_k": pass_at_k,
            "reward_stats": reward_stats,
            "exception_stats": exception_stats,
        }
    return stats


def _sorted_lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted_lists(v) for k, v in obj.items()}
    return sorted(obj) if isinstance(obj, list) else obj


def assert_stats_match(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for field in ("n_completed_trials", "n_errored_trials", "n_pending_trials",
                  "n_input_tokens", "n_cache_tokens", "n_output_tokens"):
        assert actual[field] == expected[field], field
    assert actual["cost_usd"] == pytest.approx(expected["cost_usd"])
    assert set(actual["evals"]) == set(expected["evals"])
    for key, group in expected["evals"].items():
        got = actual["evals"][key]
        for field in ("n_trials", "n_errors"):
            assert got[field] == group[field], (key, field)
        for field in ("reward_stats", "exception_stats"):  # lists in completion order
            assert _sorted_lists(got[field]) == _sorted_lists(group[field]), (key, field)
        assert got["metrics"] == [pytest.approx(m) for m in group["metrics"]], key
        assert got["pass_at_k"] == pytest.approx(group["pass_at_k"]), key


def trial_results(job_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads((p / "result.json").read_text())
        for p in sorted(job_dir.iterdir())
        if p.is_dir()
    ]


# --------------------------------------------------------------------------- fixtures

SECRET = "s3cr3t-v4lue-XYZ"


def make_experiment(root: Path) -> Experiment:
    path = root / "experiments" / "fix-build.eval.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("experiment: fix-build\n")
    agent = Step("command", ("my-agent", "--prompt-file", "{prompt_file}"))
    variants = (
        Variant(name="baseline", slug="baseline", agent=agent, model="openai/gpt-4.1",
                env={"API_TOKEN": SECRET, "MODE": "fast"}),
        Variant(name="with-skills", slug="with-skills", agent=agent, model="gpt-4.1",
                setup=Step("command", "./install-skills.sh"), raw={"version": "2.0"}),
        Variant(name="no-model", slug="no-model", agent=Step("python", "pkg.mod:run")),
    )
    tasks = (
        Task(name="missing-reference", slug="missing-reference", prompt="Fix CS0246.",
             verify=Step("command", "./check.sh"), trials=4, timeout=300.0),
        Task(name="A very long task name that goes on and on", slug=
             "a-very-long-task-name-that-goes-on-and-on", prompt="Do it.",
             verify=Step("command", "./check.sh"), trials=4),
    )
    return Experiment(name="fix-build", slug="fix-build", path=path, variants=variants,
                      tasks=tasks, secret_values=frozenset({SECRET}))


EVENTS: list[dict[str, Any]] = [
    {"type": "message", "role": "system", "content": "You are helpful."},
    {"type": "message", "role": "user", "content": "Fix the build.",
     "timestamp": "2026-01-01T12:00:01Z"},
    {"type": "message", "role": "assistant", "content": f"Looking. token={SECRET}",
     "timestamp": "2026-01-01T12:00:02Z", "model": "gpt-4.1"},
    {"type": "tool_call", "id": "c1", "name": "bash", "arguments": {"cmd": "dotnet build"},
     "timestamp": 1767268803.5},
    {"type": "tool_result", "id": "c1", "content": "error CS0246"},
    {"type": "tool_call", "name": "edit", "arguments": "{\"file\": \"a.cs\"}"},
    {"type": "tool_result", "id": "nope", "content": [{"type": "text", "text": "ok"}]},
    {"type": "usage", "input_tokens": 100, "output_tokens": 20, "cached_tokens": 5,
     "cost_usd": 0.01},
    {"type": "message", "role": "assistant", "content": "Done."},
    {"type": "usage", "input_tokens": 50, "output_tokens": 10},
    {"type": "something-else", "x": 1},
]


def make_std_trial(
    root: Path,
    variant: str,
    task: str,
    trial: int,
    *,
    reward_txt: str | None = None,
    reward_json: dict[str, Any] | None = None,
    exit_code: int = 0,
    events: list[dict[str, Any]] | str | None = None,
    artifacts_layout: bool = True,
    traceback: str | None = None,
) -> Path:
    d = root / "results" / "fix-build" / "run" / "variants" / variant / "tasks" / task / \
        "trials" / f"{trial:03d}"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"trial": trial}))
    (d / "prompt.md").write_text("Fix the build.\n")
    (d / "stdout.txt").write_text("agent says hello\n" * 50)
    (d / "metrics.json").write_text(json.dumps({"input_tokens": 150}))
    (d / "workspace.diff").write_text("--- a/x\n+++ b/x\n@@\n-a\n+b\n")
    (d / "workspace").mkdir()
    (d / "workspace" / "big.bin").write_bytes(b"x" * 1000)
    (d / "verify.json").write_text(json.dumps(
        {"exit_code": exit_code, "reward": None, "rewards": {}, "stdout_tail": "1 passed"}))
    verifier = d / "verifier"
    verifier.mkdir()
    (verifier / "verify-output.txt").write_text("running tests\n1 passed\n")
    if reward_txt is not None:
        (verifier / "reward.txt").write_text(reward_txt)
    if reward_json is not None:
        (verifier / "reward.json").write_text(json.dumps(reward_json))
    arts = d / "artifacts" if artifacts_layout else d
    arts.mkdir(exist_ok=True)
    if events is not None:
        text = events if isinstance(events, str) else "\n".join(json.dumps(e) for e in events)
        (arts / "events.jsonl").write_text(text + "\n")
    (arts / "session.md").write_text("# session\n")
    (arts / "copilot-otel.jsonl").write_text("{}\n")
    if artifacts_layout:
        (arts / "notes").mkdir()
        (arts / "notes" / "left.txt").write_text("the agent left this\n")
        os.symlink("/etc/hostname", arts / "dangling-link")
    if traceback is not None:
        (d / "traceback.txt").write_text(traceback)
    return d


def outcome(
    variant: str,
    task: str,
    trial: int,
    status: str,
    *,
    reward: float | None = None,
    rewards: dict[str, float] | None = None,
    trial_dir: Path | None = None,
    **kw: Any,
) -> TrialOutcome:
    base: dict[str, Any] = {
        "experiment": "fix-build", "variant": variant, "task": task, "trial": trial,
        "status": status, "experiment_slug": "fix-build", "variant_slug": variant,
        "task_slug": {"missing-reference": "missing-reference"}.get(
            task, "a-very-long-task-name-that-goes-on-and-on"),
        "run_id": "2026-01-01__12-00-00", "reward": reward, "rewards": rewards or {},
        "trial_dir": str(trial_dir) if trial_dir else "",
        "started_at": "2026-01-01T12:00:00.000Z", "finished_at": "2026-01-01T12:01:40.000Z",
        "duration": 100.0, "setup_duration": 5.0, "agent_duration": 60.0,
        "verify_duration": 10.0, "agent_exit": 0, "setup_exit": 0, "verify_exit": 0,
        "model": None,
    }
    base.update(kw)
    return TrialOutcome(**base)


def spec_for(exp: Experiment, variant: str, task: str) -> dict[str, Any]:
    v = next(x for x in exp.variants if x.name == variant)
    t = next(x for x in exp.tasks if x.name == task)
    return {"experiment": exp, "variant": v, "task": t}


LONG = "A very long task name that goes on and on"
MR = "missing-reference"


def write_full_job(tmp_path: Path) -> tuple[PierJob, Experiment, list[TrialOutcome]]:
    exp = make_experiment(tmp_path)
    job = PierJob(tmp_path / "jobs", "2026-01-01__12-00-00")
    n_total = 3 * 2 * 4
    job.ensure_config(experiments=[exp], n_total_trials=n_total,
                      started_at="2026-01-01T12:00:00Z", n_concurrent_trials=4)
    results = tmp_path
    outcomes: list[TrialOutcome] = []

    def add(o: TrialOutcome, std: Path | None) -> None:
        path = job.write_trial(o, trial_dir=std, **spec_for(exp, o.variant, o.task))
        o.pier_trial_dir = str(path)
        outcomes.append(o)

    # baseline x missing-reference: passed (reward.txt + events), failed (exit code), timeout,
    # error (verify crashed, with a traceback).
    std = make_std_trial(results, "baseline", MR, 1, reward_txt="1.0\n", events=EVENTS)
    add(outcome("baseline", MR, 1, PASSED, reward=1.0, rewards={"reward": 1.0}, trial_dir=std,
                model="openai/gpt-4.1",
                metrics=Metrics(input_tokens=150, output_tokens=30, cache_tokens=5,
                                cost_usd=0.01, source="otel")), std)
    std = make_std_trial(results, "baseline", MR, 2, exit_code=1, artifacts_layout=False,
                         events=EVENTS[:3])
    add(outcome("baseline", MR, 2, FAILED, reward=0.0, trial_dir=std, verify_exit=1,
                message="verify exited 1",
                metrics=Metrics(input_tokens=100, output_tokens=10)), std)
    std = make_std_trial(results, "baseline", MR, 3, events="not json at all")
    add(outcome("baseline", MR, 3, TIMEOUT, reward=None, trial_dir=std, agent_exit=None,
                verify_duration=None, message="agent timed out after 300s"), std)
    std = make_std_trial(results, "baseline", MR, 4, traceback="Traceback...\nBoom\n")
    add(outcome("baseline", MR, 4, ERROR, trial_dir=std, error_kind="verify_crashed",
                message=f"verify crashed (token {SECRET})", verify_exit=-9), std)
    # baseline x long task: 4 judged trials (pass@k 2 and 4 computable for this task).
    for i, r in enumerate([1.0, 0.0, 1.0, 1.0], start=1):
        std = make_std_trial(results, "baseline", LONG, i, reward_txt=f"{r}\n")
        add(outcome("baseline", LONG, i, PASSED if r else FAILED, reward=r,
                    rewards={"reward": r}, trial_dir=std), std)
    # with-skills: multi-key reward.json (disables pass@k, multi-key mean).
    for i in range(1, 5):
        rj = {"reward": 1 if i % 2 else 0, "speed": 0.25 * i}
        std = make_std_trial(results, "with-skills", MR, i, reward_json=rj)
        add(outcome("with-skills", MR, i, PASSED if i % 2 else FAILED, reward=float(rj["reward"]),
                    rewards={k: float(v) for k, v in rj.items()}, trial_dir=std), std)
    # no-model: a worker crash (no trial dir at all: written by finalize) and a pass.
    std = make_std_trial(results, "no-model", LONG, 1, reward_txt="1")
    add(outcome("no-model", LONG, 1, PASSED, reward=1.0, trial_dir=std), std)
    crashed = outcome("no-model", LONG, 2, ERROR, error_kind="worker_crashed",
                      message="worker gw1 crashed", crashed=True, started_at="",
                      finished_at="", duration=0.0, setup_duration=None, agent_duration=None,
                      verify_duration=None)
    outcomes.append(crashed)
    return job, exp, outcomes


# --------------------------------------------------------------------------- tests


@needs_reference
def test_reference_example_job_is_valid() -> None:
    assert REFERENCE is not None
    job = REFERENCE / "example_jobs" / "2026-01-01__12-00-00"
    counts = validate_job_dir(job, strict=False)
    assert counts == {"job": 1, "trial": 2, "trajectory": 2}
    # And our stats recomputation agrees with the example's.
    results = trial_results(job)
    ours = compute_job_stats(results, n_total_trials=2)
    example = json.loads((job / "result.json").read_text())["stats"]
    key = "demo-agent__demo-model__adhoc"
    assert ours["evals"][key]["metrics"] == example["evals"][key]["metrics"]
    assert ours["evals"][key]["reward_stats"] == example["evals"][key]["reward_stats"]
    assert ours["n_input_tokens"] == example["n_input_tokens"]


@needs_reference
def test_full_job_is_schema_valid_and_stats_match(tmp_path: Path) -> None:
    job, _exp, outcomes = write_full_job(tmp_path)
    # While running: the incremental view counts what finished once it is folded (at most
    # every FOLD_INTERVAL while trials finish; flush() folds now).
    job.flush()
    progress = job.read_result()
    assert progress is not None
    assert progress["finished_at"] is None
    assert progress["stats"]["n_completed_trials"] == len(outcomes) - 1
    validate("JobResult", progress)

    final = job.finalize(outcomes, n_total_trials=24, finished_at="2026-01-01T13:00:00Z")
    counts = validate_job_dir(job.job_dir)
    assert counts["trial"] == len(outcomes)
    assert counts["trajectory"] == 2  # the passed one and the failed one (3 events)
    on_disk = json.loads(job.result_path.read_text())
    assert on_disk == final
    assert on_disk["finished_at"] == "2026-01-01T13:00:00.000Z"
    assert on_disk["n_total_trials"] == 24

    results = trial_results(job.job_dir)
    assert_stats_match(on_disk["stats"], independent_stats(results, 24))
    stats = on_disk["stats"]
    assert stats["n_completed_trials"] == 14
    assert stats["n_errored_trials"] == 3  # timeout, verify crash, worker crash
    base = stats["evals"]["baseline__gpt-4.1__fix-build"]
    assert base["exception_stats"].keys() == {"AgentTimeoutError", "VerifierCrashedError"}
    # Mean over the 8 baseline trials: 4 passes (and errors/timeouts count 0).
    assert base["metrics"] == [{"mean": 0.5}]
    assert set(base["pass_at_k"]) == {"2", "4"}
    skills = stats["evals"]["with-skills__gpt-4.1__fix-build"]
    assert skills["pass_at_k"] == {}
    assert skills["metrics"][0] == pytest.approx({"reward": 0.5, "speed": 0.625})
    assert "no-model__fix-build" in stats["evals"]
    assert stats["n_input_tokens"] == 250
    assert stats["cost_usd"] == pytest.approx(0.01)
    # The progress view before finalize agreed on everything it tracks.
    for key, group in progress["stats"]["evals"].items():
        assert group["reward_stats"] == stats["evals"][key]["reward_stats"]
        assert group["metrics"] == [pytest.approx(m) for m in stats["evals"][key]["metrics"]] \
            or key == "no-model__fix-build"


@needs_reference
def test_trial_directory_contents(tmp_path: Path) -> None:
    job, exp, outcomes = write_full_job(tmp_path)
    job.finalize(outcomes, n_total_trials=24, finished_at="2026-01-01T13:00:00Z")
    by_trial = {(o.variant, o.task, o.trial): Path(o.pier_trial_dir or "") for o in outcomes}
    passed = by_trial[("baseline", MR, 1)]
    assert re.fullmatch(r"missing-reference__[A-Za-z0-9]{7}", passed.name)
    for name in ("config.json", "result.json", "trial.log"):
        assert (passed / name).is_file()
    assert not (passed / "exception.txt").exists()
    assert (passed / "agent" / "command-0" / "stdout.txt").read_text().startswith("agent says")
    assert (passed / "agent" / "command-0" / "command.txt").read_text() == \
        "my-agent --prompt-file {prompt_file}\n"
    assert (passed / "agent" / "command-0" / "return-code.txt").read_text() == "0\n"
    for name in ("events.jsonl", "session.md", "copilot-otel.jsonl", "metrics.json",
                 "prompt.md", "trajectory.json"):
        assert (passed / "agent" / name).is_file(), name
    assert (passed / "verifier" / "reward.txt").read_text() == "1.0\n"
    assert (passed / "verifier" / "test-stdout.txt").read_text() == "running tests\n1 passed\n"
    assert (passed / "verifier" / "verify.json").is_file()
    assert (passed / "artifacts" / "workspace.diff").is_file()
    assert (passed / "artifacts" / "notes" / "left.txt").is_file()
    # a link out of the trial is replaced by a text file naming its target (issue 19)
    link = passed / "artifacts" / "dangling-link"
    assert not link.is_symlink() and "/etc/hostname" in link.read_text()
    assert not (passed / "artifacts" / "events.jsonl").exists()  # in agent/, not twice
    assert not (passed / "workspace").exists()
    # Hard links: the same inode as the standard layout's file.
    std = Path(outcomes[0].trial_dir)
    assert os.stat(std / "stdout.txt").st_ino == \
        os.stat(passed / "agent" / "command-0" / "stdout.txt").st_ino

    result = json.loads((passed / "result.json").read_text())
    assert result["agent_info"] == {"name": "baseline", "version": evalrun_version,
                                    "model_info": {"name": "gpt-4.1", "provider": "openai"}}
    assert result["verifier_result"] == {"rewards": {"reward": 1.0}}
    assert result["agent_result"]["n_input_tokens"] == 150
    assert result["agent_result"]["metadata"]["status"] == PASSED
    assert result["source"] == "fix-build"
    assert result["trial_uri"] == passed.resolve().as_uri()
    assert result["config"]["agent"]["env"] == {"API_TOKEN": "***", "MODE": "fast"}
    assert result["config"]["agent"]["override_timeout_sec"] == 300.0
    # Timings: verify ends at finished_at, then agent, setup, environment from started_at.
    assert result["verifier"] == {"started_at": "2026-01-01T12:01:30.000Z",
                                  "finished_at": "2026-01-01T12:01:40.000Z"}
    assert result["agent_execution"]["started_at"] == "2026-01-01T12:00:30.000Z"
    assert result["agent_setup"]["started_at"] == "2026-01-01T12:00:25.000Z"
    assert result["environment_setup"] == {"started_at": "2026-01-01T12:00:00.000Z",
                                           "finished_at": "2026-01-01T12:00:25.000Z"}
    traj = json.loads((passed / "agent" / "trajectory.json").read_text())
    assert traj["schema_version"] == "ATIF-v1.6"
    assert SECRET not in json.dumps(traj)

    failed = by_trial[("baseline", MR, 2)]
    assert (failed / "verifier" / "reward.txt").read_text() == "0.0\n"  # from the exit code
    assert (failed / "agent" / "events.jsonl").is_file()  # top-level layout also found

    timeout = by_trial[("baseline", MR, 3)]
    tres = json.loads((timeout / "result.json").read_text())
    assert tres["exception_info"]["exception_type"] == "AgentTimeoutError"
    assert tres["verifier_result"] is None and tres["verifier"] is None
    assert not (timeout / "agent" / "trajectory.json").exists()  # events not convertible
    assert (timeout / "exception.txt").read_text().startswith("AgentTimeoutError")

    error = by_trial[("baseline", MR, 4)]
    eres = json.loads((error / "result.json").read_text())
    assert eres["exception_info"]["exception_type"] == "VerifierCrashedError"
    assert "Boom" in eres["exception_info"]["exception_traceback"]
    assert SECRET not in (error / "exception.txt").read_text()

    skills = by_trial[("with-skills", MR, 1)]
    assert json.loads((skills / "verifier" / "reward.json").read_text())["speed"] == 0.25
    assert not (skills / "verifier" / "reward.txt").exists()
    sres = json.loads((skills / "result.json").read_text())
    assert sres["agent_info"]["version"] == "2.0"
    assert sres["agent_info"]["model_info"] == {"name": "gpt-4.1", "provider": None}

    crashed = outcomes[-1]
    crash_dirs = [p for p in job.job_dir.iterdir() if p.is_dir()
                  and json.loads((p / "result.json").read_text())["agent_result"]["metadata"]
                  ["trial"] == 2 and p.name.startswith("a-very-long-task-name-that-goes-")]
    crash_dirs = [p for p in crash_dirs if json.loads((p / "result.json").read_text())
                  ["agent_info"]["name"] == "no-model"]
    assert len(crash_dirs) == 1
    cres = json.loads((crash_dirs[0] / "result.json").read_text())
    assert cres["exception_info"]["exception_type"] == "WorkerCrashedError"
    assert cres["started_at"] is None
    assert crashed.task_slug[:32] == crash_dirs[0].name.split("__")[0]

    # No secret in anything we generated.
    for path in job.job_dir.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_nlink == 1 and \
                path.suffix in (".json", ".log", ".txt"):
            assert SECRET not in path.read_text(), path
    assert job.job_dir.joinpath("job.log").read_text().count("finished") >= 13
    _ = exp


def test_trial_names_deterministic_and_harbor_shaped() -> None:
    a = trial_name_for("run1", "exp", "v", "task", 1, task_slug="task")
    assert a == trial_name_for("run1", "exp", "v", "task", 1, task_slug="task")
    assert a != trial_name_for("run1", "exp", "v", "task", 2, task_slug="task")
    assert a != trial_name_for("run2", "exp", "v", "task", 1, task_slug="task")
    assert re.fullmatch(r"task__[A-Za-z0-9]{7}", a)
    long = trial_name_for("r", "e", "v", "t", 1, task_slug="x" * 50)
    assert long.startswith("x" * 32 + "__") and len(long) == 32 + 2 + 7
    weird = trial_name_for("r", "e", "v", "t", 1, task_slug="with space/and:colon")
    assert re.fullmatch(r"[A-Za-z0-9._-]+__[A-Za-z0-9]{7}", weird)


def test_trial_name_collision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pier_names.trial_suffix

    def clashing(run_id: str, e: str, v: str, t: str, n: int, attempt: int = 0) -> str:
        return "AAAAAAA" if attempt == 0 else real(run_id, e, v, t, n, attempt)

    monkeypatch.setattr(pier_names, "trial_suffix", clashing)
    job = PierJob(tmp_path / "jobs", "run")
    first = job.trial_dir_name("e", "v", "task", 1)
    second = job.trial_dir_name("e", "v", "task", 2)
    assert first == "task__AAAAAAA"
    assert second != first and second.startswith("task__")
    # Stable: asking again finds the same directories.
    assert job.trial_dir_name("e", "v", "task", 2) == second
    assert PierJob(tmp_path / "jobs", "run").trial_dir_name("e", "v", "task", 1) == first


def test_job_names() -> None:
    assert safe_job_name("2026-01-01__12-00-00") == "2026-01-01__12-00-00"
    odd = safe_job_name("my run: 1/2")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", odd) and odd.startswith("my-run-1-2-")
    assert safe_job_name("a b") != safe_job_name("a-b")
    assert safe_job_name("..") .startswith("job")
    assert safe_job_name("CON").startswith("job-")
    assert safe_job_name("x" * 300).startswith("x" * 100 + "-")


@needs_reference
def test_odd_job_name_is_usable(tmp_path: Path) -> None:
    job = PierJob(tmp_path / "jobs", "2026-01-01T12:00:00Z run/\u00e9")
    std = make_std_trial(tmp_path, "baseline", MR, 1, reward_txt="1")
    job.ensure_config(experiments=[make_experiment(tmp_path)], n_total_trials=1,
                      started_at="bogus")
    job.write_trial(outcome("baseline", MR, 1, PASSED, reward=1.0), trial_dir=std)
    assert job.job_dir.parent == tmp_path / "jobs"
    config = json.loads(job.config_path.read_text())
    assert config["job_name"] == job.job_dir.name
    validate_job_dir(job.job_dir)


def test_link_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.txt"
    src.write_text("content")
    assert link_file(src, tmp_path / "a" / "hard.txt") == "hardlink"
    assert os.stat(tmp_path / "a" / "hard.txt").st_ino == os.stat(src).st_ino
    assert link_file(src, tmp_path / "a" / "sym.txt", "symlink") == "symlink"
    assert os.readlink(tmp_path / "a" / "sym.txt") == os.path.join("..", "src.txt")
    assert link_file(src, tmp_path / "a" / "copy.txt", "copy") == "copy"
    assert (tmp_path / "a" / "copy.txt").read_text() == "content"
    assert not (tmp_path / "a" / "copy.txt").is_symlink()
    # Replacing an existing link never writes through it.
    (tmp_path / "other.txt").write_text("other")
    link_file(tmp_path / "other.txt", tmp_path / "a" / "hard.txt")
    assert src.read_text() == "content"

    def no_link(*_a: Any, **_k: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    assert link_file(src, tmp_path / "b" / "f.txt") == "symlink"
    monkeypatch.setattr(os, "symlink", no_link)
    assert link_file(src, tmp_path / "c" / "f.txt") == "copy"
    assert (tmp_path / "c" / "f.txt").read_text() == "content"


@needs_reference
def test_trajectory_conversion() -> None:
    traj = events_to_trajectory(EVENTS, agent_name="a", agent_version="1", model_name="m",
                                session_id="s")
    assert traj is not None
    validate("Trajectory", traj)
    steps = traj["steps"]
    # A tool call after an observation starts a new agent turn.
    assert [s["source"] for s in steps] == ["system", "user", "agent", "agent", "agent"]
    assert [s["step_id"] for s in steps] == [1, 2, 3, 4, 5]
    assert steps[2]["message"].startswith("Looking.")
    assert steps[2]["model_name"] == "gpt-4.1"
    assert steps[2]["timestamp"] == "2026-01-01T12:00:02.000Z"
    assert steps[2]["tool_calls"] == [{"tool_call_id": "c1", "function_name": "bash",
                                      "arguments": {"cmd": "dotnet build"}}]
    assert steps[2]["observation"]["results"] == [{"source_call_id": "c1",
                                                  "content": "error CS0246"}]
    assert steps[3]["message"] == ""
    assert steps[3]["tool_calls"][0]["function_name"] == "edit"
    assert steps[3]["tool_calls"][0]["arguments"] == {"file": "a.cs"}
    assert steps[3]["observation"]["results"] == [{"source_call_id": None, "content": "ok"}]
    assert steps[3]["metrics"] == {"prompt_tokens": 100, "completion_tokens": 20,
                                   "cached_tokens": 5, "cost_usd": 0.01}
    assert steps[4]["message"] == "Done."
    assert steps[4]["metrics"] == {"prompt_tokens": 50, "completion_tokens": 10}
    assert traj["final_metrics"] == {"total_steps": 5, "total_prompt_tokens": 150,
                                     "total_completion_tokens": 30, "total_cached_tokens": 5,
                                     "total_cost_usd": 0.01}
    assert events_to_trajectory([], agent_name="a", agent_version="1") is None
    assert events_to_trajectory([{"type": "usage", "input_tokens": 3}],
                                agent_name="a", agent_version="1") is None
    # Tool events alone still make a (valid) trajectory.
    only_tools = events_to_trajectory(
        [{"type": "tool_call", "name": "ls", "arguments": None},
         {"type": "tool_result", "content": {"files": []}}],
        agent_name="a", agent_version="1")
    assert only_tools is not None
    validate("Trajectory", only_tools)


def test_trajectory_timestamps_are_iso_utc_or_left_out() -> None:
    """One timestamp rule for both trajectories (events.jsonl and a preset's): ISO 8601 text
    and epoch seconds or milliseconds become UTC ISO 8601; anything else is left out (Harbor
    refuses a step timestamp that is not ISO 8601)."""
    events = [{"type": "message", "role": "user", "content": "a", "timestamp": stamp}
              for stamp in ("2026-11-23T12:49:55+01:00", 1795000000, 1795000000123,
                            "yesterday", True)]
    traj = events_to_trajectory(events, agent_name="a", agent_version="1")
    assert traj is not None
    stamps = [step.get("timestamp") for step in traj["steps"]]
    assert stamps == ["2026-11-23T11:49:55.000Z", "2026-11-18T11:06:40.000Z",
                      "2026-11-18T11:06:40.123Z", None, None]


def test_split_model() -> None:
    assert split_model("anthropic/claude-sonnet-4") == {"name": "claude-sonnet-4",
                                                        "provider": "anthropic"}
    assert split_model("openrouter/meta/llama") == {"name": "meta/llama",
                                                    "provider": "openrouter"}
    assert split_model("gpt-4.1") == {"name": "gpt-4.1", "provider": None}
    assert split_model(None) is None


@needs_reference
def test_resume_keeps_job_and_trials(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    first = PierJob(tmp_path / "jobs", "run-1")
    first.ensure_config(experiments=[exp], n_total_trials=3, started_at="2026-01-01T12:00:00Z")
    std1 = make_std_trial(tmp_path, "baseline", MR, 1, reward_txt="1")
    std2 = make_std_trial(tmp_path, "baseline", MR, 2, exit_code=1)
    o1 = outcome("baseline", MR, 1, PASSED, reward=1.0, trial_dir=std1)
    o2 = outcome("baseline", MR, 2, FAILED, reward=0.0, trial_dir=std2)
    p1 = first.write_trial(o1, trial_dir=std1, **spec_for(exp, "baseline", MR))
    p2 = first.write_trial(o2, trial_dir=std2, **spec_for(exp, "baseline", MR))
    first_result = first.finalize([o1, o2], n_total_trials=3, finished_at="2026-01-01T12:10:00Z")
    job_id = first_result["id"]

    second = PierJob(tmp_path / "jobs", "run-1", job_id=str(uuid.uuid4()))
    second.ensure_config(experiments=[exp], n_total_trials=4, started_at="2026-02-02T00:00:00Z")
    resumed = second.read_result()
    assert resumed is not None
    assert resumed["id"] == job_id == second.job_id
    assert resumed["started_at"] == "2026-01-01T12:00:00.000Z"
    assert resumed["finished_at"] is None
    assert resumed["n_total_trials"] == 4
    assert resumed["stats"]["n_completed_trials"] == 2
    assert (p1 / "result.json").is_file() and (p2 / "result.json").is_file()

    # Re-run trial 2 (now passing): same directory, its old contribution replaced.
    (p2 / "stale-file.txt").write_text("stale")
    (p2 / "exception.txt").write_text("old")
    std2b = make_std_trial(tmp_path / "again", "baseline", MR, 2, reward_txt="1")
    o2b = outcome("baseline", MR, 2, PASSED, reward=1.0, trial_dir=std2b,
                  started_at="2026-02-02T00:00:01Z", finished_at="2026-02-02T00:00:09Z")
    assert second.write_trial(o2b, trial_dir=std2b, **spec_for(exp, "baseline", MR)) == p2
    assert not (p2 / "exception.txt").exists()
    second.flush()
    progress = second.read_result()
    assert progress is not None
    assert progress["stats"]["n_completed_trials"] == 2
    group = progress["stats"]["evals"]["baseline__gpt-4.1__fix-build"]
    # trial names listed by name (not finishing order): one machine or merged shards agree
    assert group["reward_stats"] == {"reward": {"1.0": sorted([p1.name, p2.name])}}
    assert group["metrics"] == [{"mean": 1.0}]

    # The controller of the resumed session only has the re-run outcome: the kept trial stays.
    final = second.finalize([o2b], n_total_trials=4, finished_at="2026-02-02T00:01:00Z")
    assert final["id"] == job_id
    assert final["stats"]["n_completed_trials"] == 2
    assert final["stats"]["n_pending_trials"] == 2
    assert json.loads((p2 / "config.json").read_text())["job_id"] == job_id
    validate_job_dir(second.job_dir)
    assert_stats_match(final["stats"], independent_stats(trial_results(second.job_dir), 4))
    log = (second.job_dir / "job.log").read_text()
    assert "job started" in log and "job resumed" in log


def test_stats_incremental_equals_recompute(tmp_path: Path) -> None:
    """The progress view (folded deltas) tracks the same counts as a full recompute."""
    job = PierJob(tmp_path / "jobs", "inc")
    job.ensure_config(experiments=[], n_total_trials=6, started_at="2026-01-01T00:00:00Z")
    rewards = [1.0, 0.0, 1.0, None, 0.5, 1.0]
    for i, r in enumerate(rewards, start=1):
        status = ERROR if r is None else (PASSED if r == 1.0 else FAILED)
        o = outcome("v", MR, i, status, reward=r, error_kind="setup_failed" if r is None else None,
                    metrics=Metrics(input_tokens=10, output_tokens=1, cost_usd=0.5))
        job.write_trial(o, trial_dir=None)
    job.flush()
    progress = job.read_result()
    assert progress is not None
    recomputed = compute_job_stats(trial_results(job.job_dir), n_total_trials=6)
    for field in ("n_completed_trials", "n_errored_trials", "n_pending_trials",
                  "n_input_tokens", "n_output_tokens", "cost_usd"):
        assert progress["stats"][field] == recomputed[field], field
    key = "v__fix-build"
    assert _sorted_lists(progress["stats"]["evals"][key]["reward_stats"]) == \
        _sorted_lists(recomputed["evals"][key]["reward_stats"])
    assert progress["stats"]["evals"][key]["metrics"] == \
        [pytest.approx(recomputed["evals"][key]["metrics"][0])]
    assert recomputed["evals"][key]["exception_stats"] == {"SetupFailedError": [
        p.name for p in job.job_dir.iterdir() if p.is_dir()
        and json.loads((p / "result.json").read_text())["exception_info"]]}
    assert recomputed["evals"][key]["pass_at_k"] == {}  # 0.5 is not binary


def test_pass_at_k_matches_harbor_examples() -> None:
    def results(task_rewards: dict[str, list[float | None]]) -> list[dict[str, Any]]:
        out = []
        for task, values in task_rewards.items():
            for i, v in enumerate(values):
                out.append({"trial_name": f"{task}__{i}", "task_name": task,
                            "agent_info": {"name": "a", "version": "1"},
                            "verifier_result": None if v is None else {"rewards": {"reward": v}}})
        return out

    stats = compute_job_stats(results({"t1": [1, 0, 0, 0, 0], "t2": [0] * 5}))
    assert stats["evals"]["a__adhoc"]["pass_at_k"] == pytest.approx(
        {"2": (0.4 + 0.0) / 2, "4": (0.8 + 0.0) / 2, "5": 0.5})
    assert compute_job_stats(results({"t": [1.0]}))["evals"]["a__adhoc"]["pass_at_k"] == {}
    stats = compute_job_stats(results({"t": [1.0, None, 1.0]}))
    assert stats["evals"]["a__adhoc"]["pass_at_k"] == {"2": 1.0}
    assert stats["evals"]["a__adhoc"]["metrics"] == [{"mean": pytest.approx(2 / 3)}]
    assert stats["evals"]["a__adhoc"]["n_trials"] == 2


# --------------------------------------------------------------------------- concurrency


def _worker(jobs_dir: str, worker: int, n: int) -> None:
    job = PierJob(Path(jobs_dir), "concurrent")
    # As the plugin's workers do: each process makes sure the job exists (no stats reset).
    job.ensure_config(experiments=[], n_total_trials=100, started_at="2026-01-01T00:00:05Z")
    root = Path(jobs_dir).parent / f"std-{worker}"
    for i in range(n):
        trial = worker * 1000 + i
        std = make_std_trial(root, f"v{worker % 2}", MR, trial, reward_txt=f"{i % 2}")
        o = outcome(f"v{worker % 2}", MR, trial, PASSED if i % 2 else FAILED,
                    reward=float(i % 2), trial_dir=std,
                    metrics=Metrics(input_tokens=1, output_tokens=2, cost_usd=0.25))
        job.write_trial(o, trial_dir=std)


def _reader(path: Path, stop: threading.Event, errors: list[str], reads: list[int]) -> None:
    while not stop.is_set():
        try:
            data = json.loads(path.read_text())
            assert isinstance(data["stats"]["n_completed_trials"], int)
            reads[0] += 1
        except FileNotFoundError:
            continue
        except Exception as exc:
            errors.append(repr(exc))


@needs_reference
def test_concurrent_writers(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = PierJob(jobs, "concurrent")
    job.ensure_config(experiments=[], n_total_trials=100, started_at="2026-01-01T00:00:00Z")
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]
    reader = threading.Thread(target=_reader, args=(job.result_path, stop, errors, reads))
    reader.start()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(jobs), w, 25)) for w in range(4)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
            assert p.exitcode == 0
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    assert reads[0] > 0

    job.flush()
    progress = job.read_result()
    assert progress is not None
    validate("JobResult", progress)
    stats = progress["stats"]
    assert stats["n_completed_trials"] == 100
    assert stats["n_pending_trials"] == 0
    assert stats["n_input_tokens"] == 100 and stats["n_output_tokens"] == 200
    assert stats["cost_usd"] == pytest.approx(25.0)
    for v in ("v0", "v1"):
        group = stats["evals"][f"{v}__fix-build"]
        assert group["n_trials"] == 50
        assert sum(len(x) for x in group["reward_stats"]["reward"].values()) == 50
        assert group["metrics"] == [{"mean": pytest.approx(24 / 50)}]
    dirs = [p for p in jobs.joinpath("concurrent").iterdir() if p.is_dir()]
    assert len(dirs) == 100
    results = trial_results(job.job_dir)
    assert_stats_match(
        job.finalize([], n_total_trials=100, finished_at="2026-01-01T01:00:00Z")["stats"],
        independent_stats(results, 100),
    )
    assert not job.pending_path.exists()


def _iter_json(job_dir: Path) -> Iterator[Path]:
    yield from job_dir.rglob("*.json")


@needs_reference
def test_every_json_file_parses(tmp_path: Path) -> None:
    job, _exp, outcomes = write_full_job(tmp_path)
    job.finalize(outcomes, n_total_trials=24, finished_at="2026-01-01T13:00:00Z")
    for path in _iter_json(job.job_dir):
        json.loads(path.read_text())
    assert not list(job.job_dir.rglob("*.tmp"))


@needs_reference
def test_processes_with_different_run_ids_share_trial_names(tmp_path: Path) -> None:
    """A worker constructing the job without run_id and the controller with one agree."""
    worker = PierJob(tmp_path / "jobs", "2026-01-01__12-00-00__fix-build")
    worker.ensure_config(experiments=[], n_total_trials=2, started_at="2026-01-01T12:00:00Z")
    std = make_std_trial(tmp_path, "baseline", MR, 1, reward_txt="1")
    o1 = outcome("baseline", MR, 1, PASSED, reward=1.0, trial_dir=std)
    written = worker.write_trial(o1, trial_dir=std)
    controller = PierJob(tmp_path / "jobs", "2026-01-01__12-00-00__fix-build",
                         run_id="2026-01-01__12-00-00")
    assert controller.run_id == worker.run_id
    o2 = outcome("baseline", MR, 2, ERROR, error_kind="worker_crashed", message="crashed")
    # The controller's copies of the outcomes do not know their Pier directories.
    final = controller.finalize([o1, o2], n_total_trials=2, finished_at="2026-01-01T13:00:00Z")
    dirs = sorted(p for p in controller.job_dir.iterdir() if p.is_dir())
    assert len(dirs) == 2 and written in dirs
    assert final["stats"]["n_completed_trials"] == 2
    assert final["stats"]["n_errored_trials"] == 1
    validate_job_dir(controller.job_dir)


def test_datasets_name_only_and_old_config_repaired(tmp_path: Path) -> None:
    """Harbor's DatasetConfig takes a path or a name, never both: a job written by an earlier
    version (both) gets its dataset replaced on the next session's ensure_config."""
    exp = make_experiment(tmp_path)
    job = PierJob(tmp_path / "jobs", "run-1")
    job.ensure_config(experiments=[exp], n_total_trials=1, started_at="2026-01-01T12:00:00Z")
    config = json.loads(job.config_path.read_text())
    expected = [{"name": "fix-build", "task_names": [t.name for t in exp.tasks]}]
    assert config["datasets"] == expected
    config["datasets"] = [{"path": str(exp.path), **expected[0]}]
    job.config_path.write_text(json.dumps(config))
    PierJob(tmp_path / "jobs", "run-1").ensure_config(
        experiments=[exp], n_total_trials=1, started_at="2026-01-01T12:00:00Z")
    assert json.loads(job.config_path.read_text())["datasets"] == expected


def test_every_rewarded_trial_carries_the_main_reward(tmp_path: Path) -> None:
    """``reward`` first in every trial's rewards; numbers without a main reward give none."""
    exp = make_experiment(tmp_path)
    job = PierJob(tmp_path / "jobs", "run-1")
    job.ensure_config(experiments=[exp], n_total_trials=3, started_at="2026-01-01T12:00:00Z")
    cases = [
        (outcome("baseline", MR, 1, PASSED, reward=1.0, rewards={"speed": 0.5, "reward": 1.0}),
         {"rewards": {"reward": 1.0, "speed": 0.5}}),
        (outcome("baseline", MR, 2, FAILED, reward=0.0), {"rewards": {"reward": 0.0}}),
        (outcome("baseline", MR, 3, ERROR, error_kind="verify_crashed",
                 rewards={"a": 1.0, "b": 0.0}), None),
    ]
    for o, expected in cases:
        path = job.write_trial(o, trial_dir=None, **spec_for(exp, "baseline", MR))
        result = json.loads((path / "result.json").read_text())
        assert result["verifier_result"] == expected
        if expected is not None:
            assert next(iter(result["verifier_result"]["rewards"])) == "reward"


def test_agent_version_is_the_preset_clis_own(tmp_path: Path) -> None:
    """A preset trial's agent_info.version is the CLI's version its records reported (the
    trajectory the preset wrote), not the plugin's; a plain agent cannot claim one by writing
    that file, and a variant's ``version:`` key wins."""
    exp = make_experiment(tmp_path)
    preset = Variant(name="claude", slug="claude", agent=Step("preset", {"preset": "claude-code"}))
    plain = exp.variants[0]
    job = PierJob(tmp_path / "jobs", "versions")
    seen = {}
    for n, (variant, claimed) in enumerate(
        [(preset, "2.1.328"), (plain, "9.9.9"), (preset, "unknown"), (preset, "1.0\n\x1b[2J")],
        start=1,
    ):
        std = make_std_trial(tmp_path / f"t{n}", variant.name, MR, n)
        (std / "artifacts").mkdir(exist_ok=True)
        (std / "artifacts" / "trajectory.json").write_text(
            json.dumps({"agent": {"name": "claude-code", "version": claimed}})
        )
        path = job.write_trial(
            outcome(variant.name, MR, n, PASSED, reward=1.0), trial_dir=std,
            experiment=exp, variant=variant,
        )  # fmt: skip
        seen[n] = json.loads((path / "result.json").read_text())["agent_info"]["version"]
    plugin = evalrun_version
    assert seen == {1: "2.1.328", 2: plugin, 3: plugin, 4: plugin}
    with_key = Variant(name="k", slug="k", agent=preset.agent, raw={"version": "3.0"})
    assert agent_version(with_key, "2.1.328") == "3.0"
