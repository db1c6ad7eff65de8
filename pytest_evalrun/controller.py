"""The controller side: gather every trial's outcome from the reports and finish the run.

Runs in the only process without xdist, else in the xdist controller. Outcomes arrive as plain
data in ``report.user_properties`` (so remote workers work too); a crashed worker's trial is
recorded here as ``error``. At the end: summary.json / summary.md / metrics.txt, run.json's final
state, the SQLite index, the Pier job result, JUnit suite properties and the gate verdict.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from filelock import FileLock

from .outcome import ERROR, USER_PROPERTY, TrialOutcome
from .report import junit
from .report.markdown import render_markdown
from .report.openmetrics import render_openmetrics
from .report.summary import ExperimentMeta, build_summary
from .secrets import Redactor
from .spec.errors import SpecError
from .spec.model import Experiment
from .store import index, runs
from .store.atomic import read_json, write_json_atomic, write_text_atomic
from .store.paths import RunPaths
from .trial.process import kill_processes_with_env

if TYPE_CHECKING:
    from .session import EvalState

SPEC_ERROR_PROPERTY = "evalrun_spec_error"


def is_trial_nodeid(nodeid: str) -> bool:
    parts = nodeid.split("::")
    return (
        len(parts) == 4 and parts[0].endswith((".yaml", ".yml")) and parts[3].startswith("trial-")
    )


@dataclass
class RunResult:
    experiment: Experiment
    run_id: str
    outcomes: list[TrialOutcome] = field(default_factory=list)
    collected: int = 0
    variant_slugs: set[str] = field(default_factory=set)
    task_slugs: set[str] = field(default_factory=set)


class Controller:
    def __init__(self, state: EvalState) -> None:
        self.state = state
        self.config = state.config
        self.shared = state.shared
        self.outcomes: dict[str, TrialOutcome] = {}
        self.spec_errors: dict[str, str] = {}
        self.collected: list[str] = []
        self.summary: dict[str, Any] | None = None
        self.run_dirs: list[Path] = []

    # -- during the run ------------------------------------------------------------------
    def set_collected(self, nodeids: list[str]) -> None:
        if not self.collected:
            self.collected = [n for n in nodeids if is_trial_nodeid(n)]

    def on_report(self, report: pytest.TestReport) -> None:
        props = report.user_properties
        keep = []
        for name, value in props:
            if name == USER_PROPERTY and isinstance(value, dict):
                # setup, call and teardown reports all carry it: read it once
                if report.nodeid not in self.outcomes:
                    self.outcomes[report.nodeid] = TrialOutcome.from_dict(value)
            elif name == SPEC_ERROR_PROPERTY:
                self.spec_errors[report.nodeid] = str(value)
            else:
                keep.append((name, value))
        if len(keep) != len(props):
            report.user_properties = keep  # xunit2 allows no <properties> under <testcase>
        outcome = self.outcomes.get(report.nodeid)
        if outcome is not None:
            junit.name_testcase(self.config, report, outcome)

    def experiment_of(self, nodeid: str) -> Experiment | None:
        spec = self.state.discovery.load(self.config.rootpath / nodeid.split("::")[0])
        return None if isinstance(spec, SpecError) else spec

    def on_crash(self, nodeid: str, report: pytest.TestReport) -> None:
        """A worker died running ``nodeid``: record the trial as error (crashed)."""
        exp = self.experiment_of(nodeid)
        if exp is None or not is_trial_nodeid(nodeid):
            return
        _, vslug, tslug, name = nodeid.split("::")
        n = int(name.removeprefix("trial-"))
        variant = next((v for v in exp.variants if v.slug == vslug), None)
        task = next((t for t in exp.tasks if t.slug == tslug), None)
        if variant is None or task is None:
            return
        paths = self.shared.run_paths(exp.slug)
        trial_dir = paths.trial_dir(vslug, tslug, n)
        killed = kill_processes_with_env("EVALRUN_TRIAL_DIR", str(trial_dir))
        try:
            data = read_json(trial_dir / "meta.json")
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        base = {k: v for k, v in data.items() if k not in ("schema_version", "success", "steps")}
        base.update(
            experiment=exp.name,
            variant=variant.name,
            task=task.name,
            trial=n,
            experiment_slug=exp.slug,
            variant_slug=vslug,
            task_slug=tslug,
            run_id=paths.run_id,
            nodeid=nodeid,
            trial_dir=str(trial_dir),
        )
        base["status"] = ERROR
        outcome = TrialOutcome.from_dict(base)
        outcome.error_kind = "worker_crashed"
        outcome.crashed = True
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        outcome.worker = str(gateway.id) if gateway is not None else None
        outcome.message = (
            f"the worker running this trial crashed ({killed} leftover processes killed)"
        )
        outcome.finished_at = runs.utc_now()
        meta = outcome.to_dict()
        meta.update(schema_version=1, success=False, steps=data.get("steps", {}))
        write_json_atomic(trial_dir / "meta.json", meta)
        index.record_trials(Path(self.shared.results) / "index.db", [outcome])
        report.user_properties = [*report.user_properties, (USER_PROPERTY, outcome.to_dict())]
        report.longrepr = f"{report.longrepr}\nERROR (worker crashed): trial directory {trial_dir}"

    # -- at the end ----------------------------------------------------------------------
    def _runs(self) -> dict[tuple[str, str], RunResult]:
        grouped: dict[tuple[str, str], RunResult] = {}
        by_file: dict[str, Experiment | None] = {}

        def experiment(nodeid: str) -> Experiment | None:
            file = nodeid.split("::")[0]
            if file not in by_file:
                by_file[file] = self.experiment_of(nodeid)
            return by_file[file]

        for nodeid in self.collected:
            exp = experiment(nodeid)
            if exp is None:
                continue
            key = (exp.slug, self.shared.run_id_for(exp.slug))
            run = grouped.setdefault(key, RunResult(exp, key[1]))
            run.collected += 1
            _, vslug, tslug, _ = nodeid.split("::")
            run.variant_slugs.add(vslug)
            run.task_slugs.add(tslug)
        for nodeid, outcome in self.outcomes.items():
            exp = experiment(nodeid)
            if exp is None:
                continue
            key = (exp.slug, outcome.run_id or self.shared.run_id_for(exp.slug))
            run = grouped.setdefault(key, RunResult(exp, key[1]))
            run.outcomes.append(outcome)
        for run in grouped.values():
            run.collected = max(run.collected, len(run.outcomes))
        return grouped

    def _meta(self, run: RunResult) -> ExperimentMeta:
        exp = run.experiment
        seen_v = {o.variant for o in run.outcomes}
        seen_t = {o.task for o in run.outcomes}
        return ExperimentMeta(
            name=exp.name,
            variants=[
                v.name for v in exp.variants if v.name in seen_v or v.slug in run.variant_slugs
            ],
            tasks=[t.name for t in exp.tasks if t.name in seen_t or t.slug in run.task_slugs],
            min_pass_rate=exp.min_pass_rate,
            task_min_pass_rate={t.name: t.min_pass_rate for t in exp.tasks},
            trials_per_task={t.name: t.trials for t in exp.tasks},
            run_id=run.run_id,
            results_dir=str(Path(self.shared.results) / exp.slug / run.run_id),
            jobs_dir=str(Path(self.shared.jobs)),
        )

    def finish(self, session: pytest.Session, exitstatus: int) -> None:
        grouped = self._runs()
        cli_gate = self.config.getoption("eval_min_pass_rate")
        baseline = self.config.getoption("eval_baseline")
        metas = {run.experiment.name: self._meta(run) for run in grouped.values()}
        not_run = {
            run.experiment.name: max(run.collected - len(run.outcomes), 0)
            for run in grouped.values()
        }
        all_outcomes = [o for run in grouped.values() for o in run.outcomes]
        self.summary = build_summary(
            all_outcomes,
            experiments_meta=metas,
            cli_min_pass_rate=cli_gate,
            baseline=baseline,
            not_run=not_run,
        )
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        db = Path(self.shared.results) / "index.db"
        for (slug, run_id), run in grouped.items():
            exp = run.experiment
            paths = RunPaths(Path(self.shared.results), slug, run_id)
            per_exp = build_summary(
                run.outcomes,
                experiments_meta={exp.name: metas[exp.name]},
                cli_min_pass_rate=cli_gate,
                baseline=baseline,
                not_run={exp.name: not_run[exp.name]},
            )
            paths.run_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(str(paths.lock)):  # a concurrent resume may finish at the same time
                write_json_atomic(paths.summary_json, per_exp, fsync=True)
                write_text_atomic(paths.summary_md, render_markdown(per_exp))
                write_text_atomic(paths.openmetrics, render_openmetrics(per_exp))
            status = self._status(exitstatus, interrupted, not_run[exp.name], session)
            counts = self._counts(run, not_run[exp.name])
            if runs.read_run(paths) is None and not run.outcomes:
                continue
            runs.finish_run(
                paths,
                session_id=self.shared.session_id,
                status=status,
                counts=counts,
                pytest_args=Redactor(exp.secret_values).redact_obj(list(self.shared.pytest_args)),
            )
            index.record_trials(db, run.outcomes)
            data = runs.read_run(paths)
            if data is not None:
                index.record_run(db, slug, data, paths.run_dir)
            self._finish_pier(run, paths)
            self.run_dirs.append(paths.run_dir)
        self._write_combined()
        junit.add_suite_properties(
            self.config, self.summary, {k: r.run_id for k, r in grouped.items()}
        )

    def _status(
        self, exitstatus: int, interrupted: bool, not_run: int, session: pytest.Session
    ) -> str:
        if interrupted:
            return runs.INTERRUPTED
        if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            return runs.FAILED
        if not_run:
            stopped = bool(session.shouldstop or session.shouldfail)
            return runs.INTERRUPTED if stopped else runs.FAILED
        return runs.COMPLETED

    @staticmethod
    def _counts(run: RunResult, not_run: int) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for o in run.outcomes:
            counts[o.status] += 1
            counts["resumed"] += int(o.resumed)
            counts["crashed"] += int(o.crashed)
        return {
            "total": run.collected,
            "passed": counts["passed"],
            "failed": counts["failed"],
            "timeout": counts["timeout"],
            "error": counts["error"],
            "resumed": counts["resumed"],
            "crashed": counts["crashed"],
            "not_run": not_run,
        }

    def _finish_pier(self, run: RunResult, paths: RunPaths) -> None:
        from .worker import open_pier_job

        job = open_pier_job(self.shared.jobs, paths, run.experiment)
        try:
            nothing_ran = bool(run.outcomes) and all(o.resumed for o in run.outcomes)
            if nothing_ran and job.reopen_unchanged(
                n_total_trials=run.collected, finished_at=runs.utc_now()
            ):
                return
            job.ensure_config(
                experiments=[run.experiment],
                n_total_trials=run.collected,
                started_at=self.shared.started_at or runs.utc_now(),
                recompute_stats=False,  # finalize() below recomputes them
            )
            job.finalize(run.outcomes, n_total_trials=run.collected, finished_at=runs.utc_now())
        except Exception as exc:  # never lose the run's own files over the Pier copy
            self.config.issue_config_time_warning(
                pytest.PytestWarning(f"pytest-evalrun: Pier job not finalized: {exc}"), 2
            )

    def _write_combined(self) -> None:
        assert self.summary is not None
        md = self.config.getoption("eval_summary_md")
        if md:
            write_text_atomic(Path(md).resolve(), render_markdown(self.summary))
        om = self.config.getoption("eval_openmetrics")
        if om:
            write_text_atomic(Path(om).resolve(), render_openmetrics(self.summary))

    # -- verdict -------------------------------------------------------------------------
    def exit_status(self, exitstatus: int) -> int:
        """The session's exit status once gates are taken into account."""
        if self.summary is None:
            return exitstatus
        verdict = self.summary.get("verdict", {})
        if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return exitstatus
        if self.spec_errors:
            return pytest.ExitCode.TESTS_FAILED
        if not verdict.get("gated"):
            return exitstatus
        if self._non_trial_failures():
            return pytest.ExitCode.TESTS_FAILED
        return pytest.ExitCode.OK if verdict.get("passed") else pytest.ExitCode.TESTS_FAILED

    def _non_trial_failures(self) -> bool:
        """Failures of ordinary tests (not trials) in the same session still fail it."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return False
        for key in ("failed", "error"):
            for rep in reporter.stats.get(key, []):
                nodeid = getattr(rep, "nodeid", "")
                if not nodeid or (not is_trial_nodeid(nodeid) and nodeid not in self.spec_errors):
                    return True
        return False
