"""End to end: the real example suite under xdist, its Pier ``jobs/`` tree checked against Harbor.

Nothing here uses the module under test to judge its output: every JSON file is validated
against Harbor 0.25.0's published schemas (closed to unknown fields), the job stats are
recomputed from the trial ``result.json`` files with Harbor's rules written out again below,
and the Pier tree is compared with the standard ``results/`` tree of the same run.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Suite
from harbor_schemas import find_reference, require_reference, validate

EXAMPLE_SUITE = Path(__file__).resolve().parents[1] / "example_suite"
EXPERIMENT = "fix-small-bugs"

#: Standard-layout file (relative to the trial dir) -> where the Pier trial shows it.
LINKED = {
    "stdout.txt": "agent/command-0/stdout.txt",
    "prompt.md": "agent/prompt.md",
    "events.jsonl": "agent/events.jsonl",
    "session.md": "agent/session.md",
    "otel.jsonl": "agent/otel.jsonl",
    "metrics.json": "agent/metrics.json",
    "verifier/verify-output.txt": "verifier/test-stdout.txt",
    "verify.json": "verifier/verify.json",
    "workspace.diff": "artifacts/workspace.diff",
}
#: Written by every trial of the demo agent that ran and was verified.
ALWAYS_LINKED = ("stdout.txt", "events.jsonl", "verifier/verify-output.txt", "verify.json")


# --------------------------------------------------------------------------- helpers


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def copy_example_suite(pytester: pytest.Pytester) -> Path:
    target = pytester.path / "example_suite"
    shutil.copytree(EXAMPLE_SUITE, target)
    return target


def job_dir_of(root: Path) -> Path:
    jobs = [p for p in (root / "jobs").iterdir() if p.is_dir()]
    assert len(jobs) == 1, jobs
    return jobs[0]


def run_dir_of(root: Path) -> Path:
    runs = [p for p in (root / "results" / EXPERIMENT).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def pier_trials(job_dir: Path) -> list[Path]:
    return sorted(p for p in job_dir.iterdir() if p.is_dir())


def std_trials(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob("variants/*/tasks/*/trials/*/meta.json"))


def hardlinks_work(directory: Path) -> bool:
    """Whether this filesystem lets us hard-link (else symlinks/copies are legitimate)."""
    src, dst = directory / ".probe-src", directory / ".probe-dst"
    src.write_text("x")
    try:
        os.link(src, dst)
    except (OSError, NotImplementedError):
        return False
    finally:
        src.unlink()
    dst.unlink()
    return True


def validate_job(job_dir: Path) -> dict[str, int]:
    """Validate every config.json/result.json/trajectory.json of a job; count what was seen."""
    counts = {"trials": 0, "trajectories": 0}
    job_result = load(job_dir / "result.json")
    validate("JobConfig", load(job_dir / "config.json"), where=job_dir / "config.json")
    validate("JobResult", job_result, where=job_dir / "result.json")
    for trial in pier_trials(job_dir):
        config, result = load(trial / "config.json"), load(trial / "result.json")
        validate("TrialConfig", config, where=trial / "config.json")
        validate("TrialResult", result, where=trial / "result.json")
        assert result["trial_name"] == config["trial_name"] == trial.name
        assert result["config"] == config
        assert config["job_id"] == job_result["id"]
        assert config["trials_dir"] == str(job_dir)
        assert Path(result["trial_uri"].removeprefix("file://")) == trial.resolve()
        counts["trials"] += 1
        trajectory = trial / "agent" / "trajectory.json"
        if trajectory.exists():
            data = load(trajectory)
            validate("Trajectory", data, where=trajectory)
            assert data["session_id"] == trial.name
            assert data["agent"]["name"] == result["agent_info"]["name"]
            counts["trajectories"] += 1
    return counts


def assert_every_json_parses(*roots: Path) -> int:
    n = 0
    for root in roots:
        for path in root.rglob("*.json"):
            if "workspace" in path.relative_to(root).parts:
                continue
            load(path)
            n += 1
        assert not list(root.rglob("*.tmp")), "temporary files left behind"
    return n


# --------------------------------------------------------------------------- Harbor's stats


def harbor_key(result: Mapping[str, Any]) -> str:
    """``JobStats.format_agent_evals_key``: ``{agent}__{model}__{source}``."""
    info = result["agent_info"]
    model = (info.get("model_info") or {}).get("name")
    source = result.get("source") or "adhoc"
    return f"{info['name']}__{model}__{source}" if model else f"{info['name']}__{source}"


def rewards_of(result: Mapping[str, Any]) -> dict[str, Any] | None:
    verifier = result.get("verifier_result")
    return None if verifier is None else verifier.get("rewards")


def expected_pass_at_k(results: list[Mapping[str, Any]]) -> dict[str, float]:
    per_task: dict[str, list[int]] = {}
    for r in results:
        rewards = rewards_of(r)
        if rewards is None:
            per_task.setdefault(r["task_name"], []).append(0)
            continue
        values = list(rewards.values())
        if len(values) != 1 or values[0] not in (0, 1):
            return {}
        per_task.setdefault(r["task_name"], []).append(int(values[0]))
    if not per_task:
        return {}
    fewest = min(len(v) for v in per_task.values())
    ks = sorted({2**i for i in range(1, 32) if 2**i <= fewest} | set(range(5, fewest + 1, 5)))
    out: dict[str, float] = {}
    for k in ks:
        per = []
        for successes in per_task.values():
            n, c = len(successes), sum(successes)
            per.append(1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k))
        out[str(k)] = sum(per) / len(per)
    return out


def expected_stats(results: list[dict[str, Any]], n_total: int) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "n_completed_trials": len(results),
        "n_errored_trials": sum(1 for r in results if r["exception_info"] is not None),
        "n_running_trials": 0,
        "n_pending_trials": n_total - len(results),
        "n_cancelled_trials": 0,
        "n_retries": 0,
        "evals": {},
    }
    for field in ("n_input_tokens", "n_cache_tokens", "n_output_tokens", "cost_usd"):
        present = [
            r["agent_result"][field] for r in results if r["agent_result"].get(field) is not None
        ]
        stats[field] = sum(present) if present else None
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(harbor_key(r), []).append(r)
    for key, members in groups.items():
        reward_stats: dict[str, dict[str, list[str]]] = {}
        exception_stats: dict[str, list[str]] = {}
        for r in members:
            for name, value in (rewards_of(r) or {}).items():
                reward_stats.setdefault(name, {}).setdefault(json.dumps(value), []).append(
                    r["trial_name"]
                )
            if r["exception_info"] is not None:
                exception_stats.setdefault(r["exception_info"]["exception_type"], []).append(
                    r["trial_name"]
                )
        reward_dicts = [rewards_of(r) for r in members]
        names = sorted({k for rw in reward_dicts if rw for k in rw})
        if len(names) <= 1:
            values = [next(iter(rw.values())) if rw else 0 for rw in reward_dicts]
            metric = {"mean": sum(values) / len(values)}
        else:
            metric = {
                k: sum((rw or {}).get(k, 0) for rw in reward_dicts) / len(reward_dicts)
                for k in names
            }
        stats["evals"][key] = {
            "n_trials": sum(1 for rw in reward_dicts if rw is not None),
            "n_errors": sum(1 for r in members if r["exception_info"] is not None),
            "metrics": [metric],
            "pass_at_k": expected_pass_at_k(members),
            "reward_stats": reward_stats,
            "exception_stats": exception_stats,
        }
    return stats


def sorted_lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: sorted_lists(v) for k, v in obj.items()}
    return sorted(obj) if isinstance(obj, list) else obj


def assert_stats_equal(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Equal as Harbor means it: trial-name lists compared as sets, floats approximately."""
    assert set(actual) >= set(expected), set(expected) - set(actual)
    for field, value in expected.items():
        if field == "evals":
            continue
        assert actual[field] == pytest.approx(value), field
    assert set(actual["evals"]) == set(expected["evals"])
    for key, group in expected["evals"].items():
        got = actual["evals"][key]
        for field in ("n_trials", "n_errors"):
            assert got[field] == group[field], (key, field)
        for field in ("reward_stats", "exception_stats"):
            assert sorted_lists(got[field]) == sorted_lists(group[field]), (key, field)
        assert got["metrics"] == [pytest.approx(m) for m in group["metrics"]], key
        assert got["pass_at_k"] == pytest.approx(group["pass_at_k"]), key


def check_job_stats(job_dir: Path) -> dict[str, Any]:
    job_result = load(job_dir / "result.json")
    results = [load(t / "result.json") for t in pier_trials(job_dir)]
    assert_stats_equal(job_result["stats"], expected_stats(results, job_result["n_total_trials"]))
    return job_result


# --------------------------------------------------------------------------- cross-layout


def check_against_standard_layout(job_dir: Path, run_dir: Path) -> dict[str, Path]:
    """Same trials, same rewards, files linked; returns {pier trial name: standard trial dir}."""
    pier = {p.name: p for p in pier_trials(job_dir)}
    std = std_trials(run_dir)
    assert len(pier) == len(std) > 0
    mapping: dict[str, Path] = {}
    for trial_dir in std:
        meta = load(trial_dir / "meta.json")
        pier_dir = Path(meta["pier_trial_dir"])
        assert pier_dir.parent == job_dir and pier_dir.name in pier, meta["pier_trial_dir"]
        assert pier_dir.name not in mapping, f"two standard trials share {pier_dir.name}"
        mapping[pier_dir.name] = trial_dir
        result = load(pier_dir / "result.json")
        assert load(pier_dir / ".evalrun.json") == {
            "run_id": run_dir.name,
            "experiment": meta["experiment"],
            "variant": meta["variant"],
            "task": meta["task"],
            "trial": meta["trial"],
        }
        # Harbor's trial name: <task slug, first 32 chars>__<7 chars>.
        stem, _, suffix = pier_dir.name.rpartition("__")
        assert stem == meta["task_slug"][:32] and len(suffix) == 7 and suffix.isalnum()
        assert result["task_name"] == meta["task"]
        assert result["source"] == meta["experiment"] == EXPERIMENT
        assert result["agent_info"]["name"] == meta["variant"]
        assert result["agent_result"]["metadata"]["trial"] == meta["trial"]
        assert result["agent_result"]["metadata"]["status"] == meta["status"]
        rewards = rewards_of(result)
        if meta["reward"] is None:
            assert rewards is None, pier_dir
        else:
            assert rewards is not None and rewards["reward"] == meta["reward"], pier_dir
        assert (result["exception_info"] is not None) == (meta["status"] in ("error", "timeout"))
        assert (pier_dir / "exception.txt").exists() == (result["exception_info"] is not None)
    return mapping


def check_trial_internals(job_dir: Path) -> None:
    """Per trial: the timing blocks tile the trial, the trajectory's tokens are the result's."""
    for trial in pier_trials(job_dir):
        result = load(trial / "result.json")
        blocks = [
            result[k]
            for k in ("environment_setup", "agent_setup", "agent_execution", "verifier")
            if result[k] is not None
        ]
        assert blocks, trial
        assert blocks[0]["started_at"] == result["started_at"], trial
        assert blocks[-1]["finished_at"] == result["finished_at"], trial
        for before, after in itertools.pairwise(blocks):
            assert before["finished_at"] == after["started_at"], trial
        for block in blocks:
            assert block["started_at"] <= block["finished_at"], trial
        trajectory = trial / "agent" / "trajectory.json"
        if not trajectory.exists():
            continue
        final = load(trajectory)["final_metrics"]
        agent = result["agent_result"]
        assert final.get("total_prompt_tokens") == agent["n_input_tokens"], trial
        assert final.get("total_completion_tokens") == agent["n_output_tokens"], trial
        assert final["total_steps"] == len(load(trajectory)["steps"]), trial


def check_links(mapping: Mapping[str, Path], job_dir: Path, *, hardlinks: bool) -> int:
    """Every standard file shown in the Pier tree is that file (same inode), not a copy."""
    n_linked = 0
    for name, std_dir in mapping.items():
        meta = load(std_dir / "meta.json")
        ran = meta["status"] in ("passed", "failed")
        for rel_std, rel_pier in LINKED.items():
            src, dst = std_dir / rel_std, job_dir / name / rel_pier
            if not src.is_file():
                assert not (ran and rel_std in ALWAYS_LINKED), f"{src} missing"
                continue
            assert dst.is_file(), f"{dst} missing (standard {src} exists)"
            if hardlinks:
                assert not dst.is_symlink(), dst
                a, b = os.stat(src), os.stat(dst)
                assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), f"{dst} is a copy of {src}"
            else:
                assert dst.read_bytes() == src.read_bytes(), dst
            n_linked += 1
    return n_linked


def variant_means_from_meta(mapping: Mapping[str, Path]) -> dict[str, float]:
    rewards: dict[str, list[float]] = {}
    for std_dir in mapping.values():
        meta = load(std_dir / "meta.json")
        rewards.setdefault(meta["variant"], []).append(meta["reward"] or 0.0)
    return {v: sum(r) / len(r) for v, r in rewards.items()}


def job_log_lines(job_dir: Path) -> list[str]:
    return (job_dir / "job.log").read_text(encoding="utf-8").splitlines()


def outcome_counts(result: pytest.RunResult) -> dict[str, int]:
    outcomes = result.parseoutcomes()
    return {k: outcomes.get(k, 0) for k in ("passed", "failed", "errors")}


# --------------------------------------------------------------------------- tests


def test_reference_schemas_fail_under_ci_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harbor_schemas.reference_candidates", lambda: [Path("/nonexistent")])
    assert find_reference() is None
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_reference()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_reference()


def test_example_suite_pier_jobs_match_harbor_and_standard_layout(
    pytester: pytest.Pytester,
) -> None:
    require_reference()
    copy_example_suite(pytester)
    spec = yaml.safe_load((EXAMPLE_SUITE / "demo.eval.yaml").read_text())
    n_items = sum(
        len(spec["variants"]) * task.get("trials", spec.get("trials", 1)) for task in spec["tasks"]
    )

    first = pytester.runpytest_subprocess("-n", "2", "example_suite")
    counts = outcome_counts(first)
    assert counts["errors"] == 0, first.stdout.str()[-3000:]
    assert counts["passed"] + counts["failed"] == n_items, first.stdout.str()[-3000:]

    root = pytester.path
    job_dir, run_dir = job_dir_of(root), run_dir_of(root)
    assert job_dir.name == f"{run_dir.name}__{EXPERIMENT}"
    assert assert_every_json_parses(root / "jobs", root / "results") > 3 * n_items
    assert not (job_dir / ".pending.jsonl").exists()

    # Every JSON file of the job is what Harbor's models describe.
    seen = validate_job(job_dir)
    assert seen == {"trials": n_items, "trajectories": n_items}
    check_trial_internals(job_dir)

    # JobConfig: the experiment as one dataset, each variant as one agent.
    config = load(job_dir / "config.json")
    assert config["job_name"] == job_dir.name
    assert Path(config["jobs_dir"]) == root / "jobs"
    assert config["n_attempts"] == spec["trials"]
    assert [a["name"] for a in config["agents"]] == list(spec["variants"])
    assert [a["model_name"] for a in config["agents"]] == [
        v["model"] for v in spec["variants"].values()
    ]
    # Harbor's DatasetConfig takes a path or a name, never both: the name, which is also
    # every trial's source and the evals keys' last part.
    assert config["datasets"] == [
        {"name": EXPERIMENT, "task_names": [t["name"] for t in spec["tasks"]]}
    ]

    # JobResult: final, and its stats are Harbor's stats of the trial results.
    job_result = check_job_stats(job_dir)
    assert job_result["n_total_trials"] == n_items
    assert job_result["finished_at"] is not None
    assert job_result["started_at"] <= job_result["finished_at"]
    stats = job_result["stats"]
    assert stats["n_completed_trials"] == n_items and stats["n_pending_trials"] == 0
    assert stats["n_errored_trials"] == 0
    assert set(stats["evals"]) == {
        f"{name}__{v['model'].partition('/')[2]}__{EXPERIMENT}"
        for name, v in spec["variants"].items()
    }
    assert (
        sum(len(b) for g in stats["evals"].values() for b in g["reward_stats"]["reward"].values())
        == n_items
    )
    assert stats["n_input_tokens"] > 0 and stats["n_output_tokens"] > 0

    # The standard layout of the same run: same trials, same rewards, files hard-linked.
    mapping = check_against_standard_layout(job_dir, run_dir)
    assert len(mapping) == n_items
    assert check_links(mapping, job_dir, hardlinks=hardlinks_work(root)) >= 4 * n_items
    # Every task of the example writes the same reward keys (only "reward"), so Harbor's
    # Mean, one "mean" for a single key, is the variant's mean reward in the standard layout
    # (with keys only some tasks write, Harbor would average each over every trial).
    means = variant_means_from_meta(mapping)
    for key, group in stats["evals"].items():
        assert set(group["reward_stats"]) == {"reward"}, key
        assert group["metrics"] == [{"mean": pytest.approx(means[key.split("__")[0]])}], key
    # The run's own counts agree with the job's.
    run = load(run_dir / "run.json")
    assert run["counts"]["passed"] == counts["passed"]
    assert run["counts"]["failed"] == counts["failed"]

    log = job_log_lines(job_dir)
    assert sum("job started" in line for line in log) == 1
    assert sum(" finished: " in line and "trial " in line for line in log) == n_items
    assert "job finished" in log[-1]

    # ---- --eval-resume continues the same job: nothing re-run, nothing changed.
    before = {t.name: (t / "result.json").read_bytes() for t in pier_trials(job_dir)}
    resumed = pytester.runpytest_subprocess("-n", "2", "--eval-resume", "example_suite")
    assert outcome_counts(resumed) == counts, resumed.stdout.str()[-3000:]
    assert job_dir_of(root) == job_dir and run_dir_of(root) == run_dir
    after = {t.name: (t / "result.json").read_bytes() for t in pier_trials(job_dir)}
    assert after == before, "a resumed trial's Pier result.json was rewritten"
    assert seen == validate_job(job_dir)
    job_result2 = check_job_stats(job_dir)
    assert job_result2["id"] == job_result["id"]
    assert job_result2["started_at"] == job_result["started_at"]
    assert job_result2["n_total_trials"] == n_items
    assert job_result2["finished_at"] is not None
    assert job_result2["finished_at"] >= job_result["finished_at"]
    assert_stats_equal(job_result2["stats"], job_result["stats"])
    assert load(job_dir / "config.json") == config
    assert check_against_standard_layout(job_dir, run_dir) == mapping
    resumed.stdout.fnmatch_lines([f"*{n_items} trials:*{n_items} resumed*"])
    log = job_log_lines(job_dir)
    assert sum("job resumed" in line for line in log) == 1
    assert sum(" finished: " in line and "trial " in line for line in log) == n_items
    assert "job finished" in log[-1]
    assert not (job_dir / ".pending.jsonl").exists()
    assert_every_json_parses(root / "jobs", root / "results")


def test_errored_trials_carry_exception_info(pytester: pytest.Pytester) -> None:
    """A variant whose agent does not exist: AgentNotFoundError, exception.txt, no reward."""
    require_reference()
    suite = copy_example_suite(pytester)
    spec = yaml.safe_load((suite / "demo.eval.yaml").read_text())
    token = "tok-e2e-0123456789"
    spec["variants"]["no-agent"] = {
        "agent": {"command": ["no-such-agent-xyz", "--prompt-file", "{prompt_file}"]},
        "env": {"DEMO_API_TOKEN": token},
    }
    (suite / "demo.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    n_per_variant = spec["trials"]

    r = pytester.runpytest_subprocess("-n", "2", "-k", "fix-add", "example_suite")
    counts = outcome_counts(r)
    assert counts["errors"] == n_per_variant, r.stdout.str()[-3000:]
    assert sum(counts.values()) == len(spec["variants"]) * n_per_variant

    root = pytester.path
    job_dir, run_dir = job_dir_of(root), run_dir_of(root)
    assert_every_json_parses(root / "jobs", root / "results")
    assert validate_job(job_dir)["trials"] == len(spec["variants"]) * n_per_variant
    job_result = check_job_stats(job_dir)
    # -k deselected the other tasks: the job counts only the trials selected.
    assert job_result["n_total_trials"] == len(spec["variants"]) * n_per_variant
    stats = job_result["stats"]
    assert stats["n_errored_trials"] == n_per_variant
    assert stats["n_pending_trials"] == 0

    mapping = check_against_standard_layout(job_dir, run_dir)
    check_links(mapping, job_dir, hardlinks=hardlinks_work(root))
    errored = [
        t
        for t in pier_trials(job_dir)
        if load(t / "result.json")["agent_info"]["name"] == "no-agent"
    ]
    assert len(errored) == n_per_variant
    for trial in errored:
        result = load(trial / "result.json")
        meta = load(mapping[trial.name] / "meta.json")
        assert meta["status"] == "error" and meta["error_kind"] == "agent_missing"
        info = result["exception_info"]
        assert info["exception_type"] == "AgentNotFoundError"
        assert "no-such-agent-xyz" in info["exception_message"]
        assert info["exception_message"] == meta["message"]
        assert info["exception_traceback"].startswith(
            f"AgentNotFoundError: {info['exception_message']}"
        )
        assert info["occurred_at"] == result["finished_at"]
        assert (trial / "exception.txt").read_text() == info["exception_traceback"] + "\n"
        assert result["verifier_result"] is None
        assert result["agent_result"]["metadata"]["error_kind"] == "agent_missing"
        assert not (trial / "agent" / "command-0" / "return-code.txt").exists()
        assert (
            (trial / "agent" / "command-0" / "command.txt")
            .read_text()
            .startswith("no-such-agent-xyz")
        )
        assert result["config"]["agent"]["env"]["DEMO_API_TOKEN"] == "***"
    group = stats["evals"][f"no-agent__{EXPERIMENT}"]
    assert group["n_trials"] == 0 and group["n_errors"] == n_per_variant
    assert sorted(group["exception_stats"]["AgentNotFoundError"]) == sorted(t.name for t in errored)
    assert group["reward_stats"] == {}
    assert group["metrics"] == [{"mean": 0}]
    # The other variants are untouched by the broken one.
    for name in ("baseline", "with-skills"):
        (key,) = [k for k in stats["evals"] if k.startswith(f"{name}__")]
        assert stats["evals"][key]["n_errors"] == 0
        assert stats["evals"][key]["n_trials"] == n_per_variant
    # The secret-looking env value is nowhere in the job's files.
    for path in job_dir.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(encoding="utf-8", errors="replace"), path

    # ---- fix the agent and resume: the errored trials re-run in their own Pier directories.
    spec["variants"]["no-agent"]["agent"] = spec["defaults"]["agent"]
    (suite / "demo.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    names_before = [t.name for t in pier_trials(job_dir)]
    r = pytester.runpytest_subprocess("-n", "2", "--eval-resume", "-k", "fix-add", "example_suite")
    assert outcome_counts(r)["errors"] == 0, r.stdout.str()[-3000:]
    assert job_dir_of(root) == job_dir and run_dir_of(root) == run_dir
    assert [t.name for t in pier_trials(job_dir)] == names_before
    assert validate_job(job_dir)["trials"] == len(names_before)
    check_trial_internals(job_dir)
    again = check_job_stats(job_dir)
    assert again["id"] == job_result["id"]
    assert again["stats"]["n_errored_trials"] == 0
    assert again["stats"]["n_completed_trials"] == len(names_before)
    fixed = again["stats"]["evals"][f"no-agent__{EXPERIMENT}"]
    assert fixed["n_errors"] == 0 and fixed["exception_stats"] == {}
    assert fixed["n_trials"] == n_per_variant
    assert sorted(n for b in fixed["reward_stats"]["reward"].values() for n in b) == sorted(
        t.name for t in errored
    )
    for trial in errored:
        result = load(trial / "result.json")
        assert result["exception_info"] is None and result["verifier_result"] is not None
        assert not (trial / "exception.txt").exists()
        assert (trial / "agent" / "command-0" / "return-code.txt").read_text() == "0\n"
    assert check_against_standard_layout(job_dir, run_dir).keys() == mapping.keys()
    check_links(mapping, job_dir, hardlinks=hardlinks_work(root))
    assert_every_json_parses(root / "jobs", root / "results")


def test_job_starts_before_its_trials(suite: Suite) -> None:
    suite.experiment(trials=2)
    suite.pytester.runpytest_subprocess("-n", "2")
    job_dir = job_dir_of(suite.root)
    started = load(job_dir / "result.json")["started_at"]
    first_trial = min(load(t / "result.json")["started_at"] for t in pier_trials(job_dir))
    assert started <= first_trial
