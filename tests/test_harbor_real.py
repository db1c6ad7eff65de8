"""Harbor checked by Harbor: a real run's ``jobs/`` loaded with Harbor 0.25.0's own code.

A small suite runs through the plugin (a subprocess, two xdist workers): trials that pass and
fail, write one reward or several, time out, whose agent is missing, whose verify writes
numbers but no main reward. Then, in the Python of a venv holding Harbor
(``tests/tools/build_harbor.py`` builds it; CI runs that first), ``tests/harbor_check.py``
loads the ``jobs/`` tree with Harbor's models, its trajectory validator, its viewer (scanner
and API) and its own job-stats computation, and tries ``harbor job resume``.

Skipped, with the reason, where no Python 3.12 or no built Harbor venv is found.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from cli_helpers import evalrun, run_pytest

TESTS = Path(__file__).resolve().parent
EXAMPLE_SUITE = TESTS.parent / "example_suite"
EXPERIMENT = "harbor-check"


def _build_module() -> ModuleType:
    path = TESTS / "tools" / "build_harbor.py"
    spec = importlib.util.spec_from_file_location("build_harbor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def harbor_python() -> Path:
    """The Harbor venv's Python, or skip naming what is missing (session-scoped: found before
    pytester points HOME elsewhere)."""
    build = _build_module()
    python = build.harbor_python()
    if python is not None:
        return Path(python)
    if build.find_python312() is None:
        pytest.skip("no Python 3.12 found (python3.12 on PATH, $EVALRUN_PYTHON312 or pyenv's "
                    "versions/3.12*): Harbor 0.25.0 needs it")
    pytest.skip(f"no Harbor {build.HARBOR_VERSION} venv in {build.venv_dir()}: "
                "run `python tests/tools/build_harbor.py`")


SPEC: dict[str, Any] = {
    "experiment": EXPERIMENT,
    "trials": 2,
    "timeout": 20,
    "defaults": {
        "agent": {"command": ["{python}", "-m", "pytest_evalrun.demo_agent",
                              "--prompt-file", "{prompt_file}"]},
        "env": {"DEMO_AGENT_SKILL": "0.7"},
    },
    "variants": {
        "demo": {"model": "demo/large"},
        "no-model": {},
        "missing": {"agent": {"command": ["no-such-agent-xyz"]}},
        "sleepy": {"model": "sleepy-model",
                   "agent": {"command": ["{python}", "-c", "import time; time.sleep(60)"]}},
    },
    "tasks": [
        {"name": "fix-add",
         "prompt": "Replace `return a - b` with `return a + b` in calc.py",
         "fixture": "fixtures/calculator", "timeout": 3,
         "verify": "{python} {experiment_dir}/checks/calculator.py {workspace}"},
        {"name": "fix-two-bugs", "prompt_file": "prompts/two-bugs.md",
         "fixture": "fixtures/two-bugs", "timeout": 3,
         "verify": "{python} {experiment_dir}/checks/partial.py {workspace}"},
        {"name": "no-main-reward", "prompt": "Nothing to do.", "timeout": 3,
         "verify": "{python} {experiment_dir}/checks/no_main.py"},
    ],
}

#: Several reward keys, as Harbor verifiers may write them.
PARTIAL = """\
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
try:
    import stats
    checks = {"mean_fixed": stats.mean([1, 2, 3]) == 2,
              "maximum_fixed": stats.maximum([1, 5, 3]) == 5}
except Exception:  # the agent broke stats.py: nothing fixed
    checks = {"mean_fixed": False, "maximum_fixed": False}
rewards = {k: float(v) for k, v in checks.items()}
out = Path(os.environ["EVALRUN_VERIFIER_DIR"]) / "reward.json"
out.write_text(json.dumps({"reward": sum(rewards.values()) / 2, **rewards}))
"""
#: Numbers but no main reward: a bad reward, judged a failure (reward 0, Harbor's
#: VerifierOutputParseError).
NO_MAIN = """\
import json, os
from pathlib import Path
out = Path(os.environ["EVALRUN_VERIFIER_DIR"]) / "reward.json"
out.write_text(json.dumps({"a": 1.0, "b": 0.0}))
"""


def make_suite(root: Path) -> None:
    suite = root / "suite"
    shutil.copytree(EXAMPLE_SUITE / "fixtures", suite / "fixtures")
    shutil.copytree(EXAMPLE_SUITE / "prompts", suite / "prompts")
    shutil.copytree(EXAMPLE_SUITE / "checks", suite / "checks")
    (suite / "checks" / "partial.py").write_text(PARTIAL)
    (suite / "checks" / "no_main.py").write_text(NO_MAIN)
    (suite / "check.eval.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))


def run_harbor_check(python: Path, jobs: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(TESTS / "harbor_check.py"), str(jobs), "--resume"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_harbor_accepts_a_real_run(pytester: pytest.Pytester, harbor_python: Path) -> None:
    make_suite(pytester.path)
    run = pytester.runpytest_subprocess("-n", "2", "suite")
    n_items = len(SPEC["variants"]) * len(SPEC["tasks"]) * SPEC["trials"]
    outcomes = run.parseoutcomes()
    assert sum(outcomes.get(k, 0) for k in ("passed", "failed", "errors")) == n_items, (
        run.stdout.str()[-3000:]
    )
    jobs = pytester.path / "jobs"
    (job_dir,) = [p for p in jobs.iterdir() if p.is_dir()]

    # Our side of the bargain: every trial with rewards carries the main reward, and the run
    # has the cases worth checking (timeouts, missing agents, several keys, no main reward).
    trials = [json.loads(p.read_text()) for p in sorted(job_dir.glob("*/result.json"))]
    assert len(trials) == n_items
    kinds = {t["exception_info"]["exception_type"] for t in trials if t["exception_info"]}
    assert {"AgentTimeoutError", "AgentNotFoundError"} <= kinds, kinds
    with_rewards = [t["verifier_result"]["rewards"] for t in trials if t["verifier_result"]]
    assert with_rewards and all("reward" in r for r in with_rewards)
    assert any(len(r) > 1 for r in with_rewards), "no trial wrote several reward keys"
    no_main = [t for t in trials if t["task_name"] == "no-main-reward"
               and t["agent_info"]["name"] == "demo"]
    assert no_main and all(t["verifier_result"] == {"rewards": {"reward": 0.0}}
                           and t["exception_info"]["exception_type"] == "VerifierOutputParseError"
                           for t in no_main)

    report = run_harbor_check(harbor_python, jobs)
    assert report["problems"] == [], "\n".join(report["problems"])
    counts = report["counts"]
    assert counts["job_configs"] == counts["job_results"] == counts["stats_equal"] == 1
    assert counts["trial_configs"] == counts["trial_results"] == n_items
    assert counts["trajectories"] >= 2 * SPEC["trials"]  # the demo agent's trials at least
    assert counts["viewer_pages"] == 2 * n_items

    seen = report["jobs"][job_dir.name]
    summary = seen["summary"]
    assert summary["agents"] == sorted(SPEC["variants"])
    assert summary["models"] == ["large", "sleepy-model"]
    assert summary["providers"] == ["demo"]
    assert summary["datasets"] == [EXPERIMENT]
    assert summary["n_total_trials"] == summary["n_completed_trials"] == n_items
    assert seen["config_tab"] is True
    assert seen["n_trial_summaries"] == n_items
    rows = {(t["agent_name"], t["task_name"]): t for t in seen["tasks"]}
    assert len(rows) == len(SPEC["variants"]) * len(SPEC["tasks"])
    assert {t["source"] for t in seen["tasks"]} == {EXPERIMENT}
    # Harbor job resume cannot run our variants as Harbor agents: it must say so, not crash,
    # and leave the job as it was.
    resume = seen["resume"]
    assert resume["outcome"] in ("refused", "ran"), resume
    assert resume["changed_files"] == [] or resume["outcome"] == "ran", resume


def test_example_suite_shows_consistent_means_in_harbors_viewer(
    pytester: pytest.Pytester, harbor_python: Path
) -> None:
    """The example writes the same reward keys for every task: the viewer's job row shows one
    mean per variant, the mean of its trials' main reward."""
    shutil.copytree(EXAMPLE_SUITE, pytester.path / "example_suite")
    run = pytester.runpytest_subprocess("-n", "2", "example_suite")
    assert run.parseoutcomes().get("passed", 0) > 0, run.stdout.str()[-3000:]
    jobs = pytester.path / "jobs"
    report = run_harbor_check(harbor_python, jobs)
    assert report["problems"] == [], "\n".join(report["problems"])
    ((job, seen),) = report["jobs"].items()
    rewards: dict[str, list[float]] = {}
    for path in (jobs / job).glob("*/result.json"):
        trial = json.loads(path.read_text())
        main = trial["verifier_result"]["rewards"]["reward"] if trial["verifier_result"] else 0.0
        rewards.setdefault(trial["agent_info"]["name"], []).append(main)
    evals = seen["summary"]["evals"]
    assert sorted(evals) == ["baseline__small__fix-small-bugs",
                             "with-skills__large__fix-small-bugs"]
    for key, value in evals.items():
        mine = rewards[key.split("__")[0]]
        assert value["metrics"] == [{"mean": pytest.approx(sum(mine) / len(mine))}], key


def test_harbor_accepts_a_merged_run(tmp_path: Path, harbor_python: Path) -> None:
    """The suite above as 3 shards on 3 "machines" (separate directories, nothing shared),
    merged by ``evalrun merge``: Harbor reads the one merged job as it reads one machine's."""
    shards = []
    for k in (1, 2, 3):
        machine = tmp_path / f"machine-{k}"
        make_suite(machine)
        done = run_pytest(
            machine, "suite", "-n", "2", f"--eval-shard={k}/3", "--eval-run-id=merged-check"
        )
        assert done.returncode in (0, 1), done.stdout[-3000:]
        shards.append(machine)
    into = tmp_path / "merged"
    merged = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    n_items = len(SPEC["variants"]) * len(SPEC["tasks"]) * SPEC["trials"]
    assert f"{n_items} trials from 3 shard(s)" in merged.stdout
    # Harbor's viewer shows where a merged trial is now: no record of the merged jobs/ names a
    # shard's directory (job and trial config/result paths, trial_uri, trial.log); only what
    # the verifier printed may (here a traceback through the shard's check script), kept byte
    # for byte as the standard layout recorded it
    named = {
        path.relative_to(into / "jobs"): count
        for path in sorted((into / "jobs").rglob("*"))
        if path.is_file() and not path.is_symlink()
        and (count := sum(path.read_bytes().count(str(s).encode()) for s in shards))
    }
    evidence = {"agent", "verifier", "artifacts"}
    records = {p: n for p, n in named.items() if not evidence & set(p.parts)}
    assert records == {}, f"{sum(records.values())} shard paths in {len(records)} files: {records}"
    recorded = {hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (into / "results").rglob("*") if p.is_file()}
    assert all(hashlib.sha256((into / "jobs" / p).read_bytes()).hexdigest() in recorded
               for p in named), named
    for path in (into / "jobs").rglob("*/result.json"):
        result = json.loads(path.read_text())
        if "trial_uri" in result:
            assert result["trial_uri"] == path.parent.resolve().as_uri()
            assert result["config"]["trials_dir"] == str(path.parent.parent.resolve())
    report = run_harbor_check(harbor_python, into / "jobs")
    assert report["problems"] == [], "\n".join(report["problems"])
    counts = report["counts"]
    # one job, its result.json accepted and its stats equal to Harbor's own from the trials
    assert counts["job_configs"] == counts["job_results"] == counts["stats_equal"] == 1
    assert counts["trial_configs"] == counts["trial_results"] == n_items
    ((_, seen),) = report["jobs"].items()
    summary = seen["summary"]
    assert summary["n_total_trials"] == summary["n_completed_trials"] == n_items
    assert summary["agents"] == sorted(SPEC["variants"])
    assert seen["config_tab"] is True
    assert len({(t["agent_name"], t["task_name"]) for t in seen["tasks"]}) == len(
        SPEC["variants"]
    ) * len(SPEC["tasks"])
