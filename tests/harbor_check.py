"""Load a ``jobs/`` directory with Harbor's own code and print its verdict as JSON.

Run with the Python of a venv holding Harbor (``tests/tools/build_harbor.py`` builds one), not
the project's: ``<harbor-venv>/bin/python tests/harbor_check.py JOBS_DIR``. Nothing here is
ours but the bookkeeping: every check is a Harbor class or function.

- the models: ``JobConfig``, ``JobResult``, ``TrialConfig``, ``TrialResult``
  (``model_validate_json``), any error recorded as a problem;
- the trajectory validator (``harbor.utils.trajectory_validator.TrajectoryValidator``) on
  every ``agent/trajectory.json``;
- the viewer's job scanner (``harbor.viewer.scanner.JobScanner``, what ``harbor view`` uses)
  must return every config and result, and the viewer's API (``harbor.viewer.server.create_app``
  through FastAPI's test client) must list the job with its agents, models and sources, serve
  its Config, its task and trial summaries;
- the job stats recomputed as Harbor computes them at the end of a job
  (``JobStats.from_trial_results``, the ``Mean`` metric, ``compute_pass_at_k_by_evals``) must
  equal the ``stats`` of our ``result.json``;
- with ``--resume``: ``harbor job resume`` (``harbor.cli.jobs.resume``, called in process) on
  a copy of each job, its docker check skipped (the job's environment is not Harbor's): it
  must refuse cleanly (exit with a message, as for any job it cannot run) or run, never raise,
  and must leave the job's files as they were.

Output: one JSON object (``problems``: list of strings, empty when Harbor accepts everything;
``counts``: what was loaded; ``jobs``: per job what the viewer shows and, with ``--resume``,
what resume did).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from harbor.metrics.mean import Mean
from harbor.models.job.config import JobConfig
from harbor.models.job.result import JobResult, JobStats
from harbor.models.trial.config import TrialConfig
from harbor.models.trial.result import TrialResult
from harbor.utils.pass_at_k import compute_pass_at_k_by_evals
from harbor.utils.trajectory_validator import TrajectoryValidator
from harbor.viewer.scanner import JobScanner
from harbor.viewer.server import create_app


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:2000]}"


def _harbor_stats(trials: list[TrialResult], n_total: int) -> dict[str, Any]:
    """The final JobStats as Harbor's Job.run computes them (default metric: Mean)."""
    stats = JobStats.from_trial_results(trials, n_total_trials=n_total)
    rewards: dict[str, list[Any]] = {}
    for trial in trials:
        model = trial.agent_info.model_info.name if trial.agent_info.model_info else None
        key = JobStats.format_agent_evals_key(trial.agent_info.name, model, trial.source or "adhoc")
        verifier = trial.verifier_result
        rewards.setdefault(key, []).append(verifier.rewards if verifier is not None else None)
    for key, values in rewards.items():
        stats.evals[key].metrics.append(Mean().compute(values))
    for key, pass_at_k in compute_pass_at_k_by_evals(trials).items():
        stats.evals[key].pass_at_k = pass_at_k
    return stats.model_dump(mode="json")


def _normalised(stats: dict[str, Any]) -> dict[str, Any]:
    """Stats with list order made irrelevant (trial names in reward/exception stats)."""
    out = json.loads(json.dumps(stats))
    for group in out.get("evals", {}).values():
        for values in group.get("reward_stats", {}).values():
            for key in list(values):
                values[key] = sorted(values[key])
        for key in list(group.get("exception_stats", {})):
            group["exception_stats"][key] = sorted(group["exception_stats"][key])
    return out


def _check_job(jobs_dir: Path, job: str, report: dict[str, Any]) -> None:
    problems: list[str] = report["problems"]
    counts: dict[str, int] = report["counts"]
    job_dir = jobs_dir / job
    scanner = JobScanner(jobs_dir)
    try:
        JobConfig.model_validate_json((job_dir / "config.json").read_text())
        counts["job_configs"] += 1
    except Exception as exc:
        problems.append(f"{job}/config.json: JobConfig: {_first_line(exc)}")
    try:
        job_result = JobResult.model_validate_json((job_dir / "result.json").read_text())
        counts["job_results"] += 1
    except Exception as exc:
        problems.append(f"{job}/result.json: JobResult: {_first_line(exc)}")
        job_result = None
    if scanner.get_job_config(job) is None:
        problems.append(f"{job}: the viewer's JobScanner returned no config")
    if scanner.get_job_result(job) is None:
        problems.append(f"{job}: the viewer's JobScanner returned no result")

    trials: list[TrialResult] = []
    for name in scanner.list_trials(job):
        trial_dir = job_dir / name
        try:
            TrialConfig.model_validate_json((trial_dir / "config.json").read_text())
            counts["trial_configs"] += 1
        except Exception as exc:
            problems.append(f"{job}/{name}/config.json: TrialConfig: {_first_line(exc)}")
        try:
            trials.append(TrialResult.model_validate_json((trial_dir / "result.json").read_text()))
            counts["trial_results"] += 1
        except Exception as exc:
            problems.append(f"{job}/{name}/result.json: TrialResult: {_first_line(exc)}")
        if scanner.get_trial_config(job, name) is None:
            problems.append(f"{job}/{name}: the viewer's JobScanner returned no trial config")
        if scanner.get_trial_result(job, name) is None:
            problems.append(f"{job}/{name}: the viewer's JobScanner returned no trial result")
        trajectory = trial_dir / "agent" / "trajectory.json"
        if trajectory.exists():
            validator = TrajectoryValidator()
            if validator.validate(trajectory):
                counts["trajectories"] += 1
            else:
                problems.append(f"{job}/{name}/agent/trajectory.json: {validator.errors}")

    if job_result is not None and job_result.finished_at is not None:
        ours = _normalised(job_result.stats.model_dump(mode="json"))
        harbors = _normalised(_harbor_stats(trials, job_result.n_total_trials or len(trials)))
        if ours != harbors:
            problems.append(
                f"{job}/result.json: stats differ from Harbor's own computation:\n"
                f"ours:   {json.dumps(ours, sort_keys=True)}\n"
                f"Harbor: {json.dumps(harbors, sort_keys=True)}"
            )
        else:
            counts["stats_equal"] += 1
    report["jobs"][job] = {"n_trials": len(trials)}


def _check_viewer(jobs_dir: Path, report: dict[str, Any]) -> None:
    problems: list[str] = report["problems"]
    client = TestClient(create_app(jobs_dir, mode="jobs"))
    listing = client.get("/api/jobs", params={"page_size": 100})
    if listing.status_code != 200:
        problems.append(f"viewer /api/jobs: HTTP {listing.status_code}")
        return
    for summary in listing.json().get("items", []):
        job = summary["name"]
        seen = report["jobs"].setdefault(job, {})
        seen["summary"] = {
            key: summary.get(key)
            for key in ("agents", "providers", "models", "datasets", "evals",
                        "n_total_trials", "n_completed_trials", "n_errored_trials")
        }
        config = client.get(f"/api/jobs/{job}/config")
        seen["config_tab"] = config.status_code == 200 and bool(config.json())
        if not seen["config_tab"]:
            problems.append(f"viewer /api/jobs/{job}/config: HTTP {config.status_code}")
        tasks = client.get(f"/api/jobs/{job}/tasks", params={"page_size": 100})
        if tasks.status_code != 200:
            problems.append(f"viewer /api/jobs/{job}/tasks: HTTP {tasks.status_code}")
        else:
            seen["tasks"] = [
                {key: item.get(key) for key in ("agent_name", "model_name", "source",
                                                "task_name", "n_trials", "avg_reward", "evals")}
                for item in tasks.json().get("items", [])
            ]
        trials = client.get(f"/api/jobs/{job}/trials", params={"page_size": 100})
        if trials.status_code != 200:
            problems.append(f"viewer /api/jobs/{job}/trials: HTTP {trials.status_code}")
            continue
        items = trials.json().get("items", [])
        seen["n_trial_summaries"] = len(items)
        for item in items:
            name = item["name"]
            for path in (f"/api/jobs/{job}/trials/{name}",
                         f"/api/jobs/{job}/trials/{name}/trajectory"):
                got = client.get(path)
                if got.status_code != 200:
                    problems.append(f"viewer {path}: HTTP {got.status_code}")
                else:
                    report["counts"]["viewer_pages"] += 1


def _digest(job_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(job_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(job_dir.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _check_resume(jobs_dir: Path, job: str, report: dict[str, Any]) -> None:
    from harbor.cli.jobs import resume
    from harbor.environments.factory import EnvironmentFactory

    def no_docker_check(**_: Any) -> None:
        return None

    EnvironmentFactory.run_preflight = staticmethod(no_docker_check)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "jobs" / job
        shutil.copytree(jobs_dir / job, copy, symlinks=True)
        before = _digest(copy)
        output = io.StringIO()
        verdict: dict[str, Any] = {}
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                resume(job_path=copy, filter_error_types=["CancelledError"])
            verdict["outcome"] = "ran"
        except SystemExit as exc:
            verdict["outcome"] = "refused"
            verdict["exit_code"] = exc.code
        except Exception as exc:
            verdict["outcome"] = "crashed"
            verdict["error"] = _first_line(exc)
            report["problems"].append(f"{job}: harbor job resume crashed: {verdict['error']}")
        verdict["message"] = " ".join(output.getvalue().split())[:500]
        after = _digest(copy)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        verdict["changed_files"] = changed
        if changed and verdict["outcome"] != "ran":
            report["problems"].append(f"{job}: harbor job resume changed {changed[:5]}")
    report["jobs"].setdefault(job, {})["resume"] = verdict


def main(argv: list[str]) -> int:
    jobs_dir = Path(argv[0])
    report: dict[str, Any] = {
        "problems": [],
        "counts": dict.fromkeys(
            ("job_configs", "job_results", "trial_configs", "trial_results", "trajectories",
             "stats_equal", "viewer_pages"), 0),
        "jobs": {},
    }
    for job in JobScanner(jobs_dir).list_jobs():
        _check_job(jobs_dir, job, report)
    _check_viewer(jobs_dir, report)
    if "--resume" in argv[1:]:
        for job in JobScanner(jobs_dir).list_jobs():
            _check_resume(jobs_dir, job, report)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
