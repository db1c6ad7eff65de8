"""The controller role: gathers every trial's outcome from the reports and finishes the run.

Registered in the only process without xdist, else in the xdist controller. Outcomes arrive as
plain data in ``report.user_properties`` (so remote workers work too); a crashed worker's trial
is recorded here as ``error``. At the end it builds each experiment's summary once, hands each
run to the recorders (summaries, run.json, index, Pier job result), adds the JUnit suite
properties and decides the exit status from the gates.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import junitxml as junit
from .collect import EXPERIMENT_ERROR_PROPERTY, TrialId, is_trial_nodeid
from .context import EvalContext
from .experiment.errors import ExperimentError
from .experiment.model import Experiment
from .finish import Gates, Plan, RegressionGate, finish_run
from .layoutjson import Summary
from .outcome import ERROR, USER_PROPERTY, TrialOutcome
from .report.markdown import render_markdown
from .report.openmetrics import render_openmetrics
from .report.policy import ERROR_POLICIES
from .report.summary import combine_summaries
from .safetext import bounded
from .shared import WORKERINPUT_KEY
from .store import runs
from .store.atomic import write_text_atomic
from .store.paths import RunPaths
from .store.recorder import FinishedRun
from .store.standard import experiment_plan
from .store.trialdir import TrialDir
from .trial.process import kill_processes_with_env

if TYPE_CHECKING:
    from .store.baseline import Candidate


@dataclass
class RunResult:
    """One experiment's run as the controller saw it in this session."""

    experiment: Experiment
    run_id: str
    outcomes: list[TrialOutcome] = field(default_factory=list)
    collected: int = 0
    variant_slugs: set[str] = field(default_factory=set)
    task_slugs: set[str] = field(default_factory=set)


class ControllerPlugin:
    def __init__(self, config: pytest.Config, context: EvalContext) -> None:
        self.config = config
        self.context = context
        self.shared = context.shared
        #: --eval-errors / ini evalrun_errors (a bad ini value is a usage error, up front)
        self.error_policy = self._error_policy()
        self.outcomes: dict[str, TrialOutcome] = {}
        self.spec_errors: dict[str, str] = {}
        self.collected: list[str] = []
        self.summary: Summary | None = None
        self.run_dirs: list[Path] = []
        #: Set when the session was interrupted: (trials stopped running, not started, run ids).
        self.interrupted: tuple[int, int, set[str]] | None = None
        #: --eval-baseline-run: each experiment's baseline run id (slug -> run id), and why an
        #: experiment that never ran before has none (slug -> reason)
        self.no_baseline: dict[str, str] = {}
        self.baselines = self._resolve_baselines()

    def _resolve_baselines(self) -> dict[str, str]:
        """The regression gate's baseline run of every experiment found, looked up before any
        trial runs (store/baseline.py): a reference that names no run is a usage error unless
        --eval-baseline-optional (then a note, and the run is not gated on regression); a run
        that would make an unfair comparison is always one. The usage error is raised once
        collection shows the experiment has trials to run here (:meth:`_refuse_baselines`): an
        experiment file that pytest does not collect (``collect_ignore``) or whose trials are
        all deselected needs no baseline."""
        ref = self.config.getoption("eval_baseline_run")
        #: what the reports name about each experiment's baseline (slug -> notes)
        self.baseline_notes: dict[str, list[str]] = {}
        self.baseline_found: dict[str, str] = {}
        #: why an experiment's baseline cannot be used (slug -> the usage error's line)
        self.baseline_errors: dict[str, str] = {}
        self.refused = False
        if not ref or self.config.option.collectonly:
            return {}
        # the regression gate's modules are imported only for --eval-baseline-run
        from .store.baseline import BaselineError, BaselineNotFound, find_baseline

        optional = bool(self.config.getoption("eval_baseline_optional"))
        results = Path(self.shared.results)
        found: dict[str, str] = {}
        for path in self.context.discovery.found:
            exp = self.context.discovery.load(path)
            if isinstance(exp, ExperimentError):
                continue
            candidate = self._candidate(exp.slug)
            named = "" if exp.name == exp.slug else f" (experiment {exp.name!r})"
            try:
                base = find_baseline(results, ref, exp.slug, candidate)
            except BaselineNotFound as exc:
                if not optional:
                    self.baseline_errors[exp.slug] = f"{exc}{named}"
                    continue
                self.no_baseline[exp.slug] = (
                    f"{exc}; --eval-baseline-optional: this run is not gated on regression"
                )
                continue
            except BaselineError as exc:
                self.baseline_errors[exp.slug] = f"{exc}{named}"
                continue
            found[exp.slug] = base.run_id
            self.baseline_found[exp.slug] = f"run {base.run_id} ({base.found_as})"
            self.baseline_notes[exp.slug] = list(base.notes)
        return found

    def _refuse_baselines(self, nodeids: list[str]) -> None:
        """A baseline that cannot be used is a usage error (exit 4) for an experiment with
        trials collected in this session: raised after collection, before any trial runs."""
        files = dict.fromkeys(n.split("::")[0] for n in nodeids)
        for file in files:
            exp = self.experiment_of(file)
            if exp is not None and exp.slug in self.baseline_errors:
                self.refused = True
                raise pytest.UsageError(self.baseline_errors[exp.slug])

    def _candidate(self, slug: str) -> Candidate:
        """This session's run of an experiment, as the baseline's fairness checks see it."""
        from .store.baseline import JUDGED_RETRY, Candidate, retry_policy

        opt = self.config.option
        retry = set(self.shared.retry)
        if self.shared.resume:  # earlier sessions of the resumed run count too
            retry |= retry_policy(runs.read_run(self.shared.run_paths(slug)) or {})
        ways = [
            name
            for name, given in (
                ("-k", getattr(opt, "keyword", "")),
                ("-m", getattr(opt, "markexpr", "")),
                ("--lf", getattr(opt, "lf", False)),
                ("--deselect", getattr(opt, "deselect", None)),
                ("node ids", any("::" in str(a) for a in self.config.args)),
                (f"--eval-shard {self.shared.shard}", bool(self.shared.shard)),
            )
            if given
        ]
        return Candidate(
            run_id=self.shared.run_id_for(slug),
            retry=frozenset(retry) & JUDGED_RETRY,
            selective=", ".join(ways),
        )

    # -- xdist -----------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Hand the shared decisions to each worker."""
        node.workerinput[WORKERINPUT_KEY] = self.shared.as_dict()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """With -n and no --dist, hand out trials in order, a few at a time, so long, uneven
        trials do not pile up on one worker (xdist's default ``load`` sends big chunks, and
        ``worksteal`` first splits the queue into contiguous blocks)."""
        if config.getoption("dist", "no") != "load" or _dist_given(config):
            return None
        mode = str(config.getini("evalrun_dist")).strip()
        if mode == "worksteal":
            from xdist.scheduler import WorkStealingScheduling  # type: ignore[import-untyped]

            return WorkStealingScheduling(config, log)
        if mode != "one-at-a-time":
            return None
        from xdist.scheduler import LoadScheduling

        scheduler = LoadScheduling(config, log)
        if config.getoption("maxschedchunk", None) is None:
            scheduler.maxschedchunk = 1
        return scheduler

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.set_collected(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        self.on_crash(crashitem, report)

    # -- during the run --------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str] | str | None:
        lines = [
            f"evalrun: regression gate of {slug} against {found}"
            for slug, found in sorted(self.baseline_found.items())
        ]
        if not self.shared.shard:
            return lines or None
        basis = "count"
        if self.shared.shard_basis:
            basis = "expected durations from " + ", ".join(
                f"{exp} run {rid}" for exp, rid in sorted(self.shared.shard_basis.items())
            )
        return [f"evalrun: shard {self.shared.shard}, balanced by {basis}", *lines]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.set_collected([item.nodeid for item in session.items])

    def set_collected(self, nodeids: list[str]) -> None:
        if not self.collected:
            self.collected = [n for n in nodeids if is_trial_nodeid(n)]
            self._refuse_baselines(self.collected)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.on_report(report)

    def on_report(self, report: pytest.TestReport) -> None:
        """Take our properties out of the report (xunit2 allows no ``<properties>`` under
        ``<testcase>``), keep the outcome, and name the JUnit testcase."""
        props = report.user_properties
        keep = []
        for name, value in props:
            if name == USER_PROPERTY and isinstance(value, dict):
                # setup, call and teardown reports all carry it: read it once
                if report.nodeid not in self.outcomes:
                    handed = self.context.handed.pop(report.nodeid, None)
                    self.outcomes[report.nodeid] = (
                        handed[1] if handed is not None and handed[0] is value
                        else TrialOutcome.from_dict(value)
                    )
            elif name == EXPERIMENT_ERROR_PROPERTY:
                self.spec_errors[report.nodeid] = str(value)
            else:
                keep.append((name, value))
        if len(keep) != len(props):
            report.user_properties = keep
        outcome = self.outcomes.get(report.nodeid)
        if outcome is not None:
            junit.name_testcase(self.config, report, outcome)

    def pytest_report_teststatus(self, report: pytest.TestReport) -> Any:
        if report.when != "call":
            return None
        outcome = self.outcomes.get(report.nodeid)
        if outcome is None or not outcome.resumed:
            return None
        word = f"{outcome.status.upper()} (resumed)"
        if report.passed:
            return "passed", ".", (word, {"green": True})
        return "failed", "F", (word, {"red": True})

    def experiment_of(self, nodeid: str) -> Experiment | None:
        spec = self.context.discovery.load(self.config.rootpath / nodeid.split("::")[0])
        return None if isinstance(spec, ExperimentError) else spec

    def on_crash(self, nodeid: str, report: pytest.TestReport) -> None:
        """A worker died running ``nodeid``: record the trial as error (crashed)."""
        tid = TrialId.parse(nodeid)
        exp = self.experiment_of(nodeid) if tid is not None else None
        if tid is None or exp is None:
            return
        variant = next((v for v in exp.variants if v.slug == tid.variant), None)
        task = next((t for t in exp.tasks if t.slug == tid.task), None)
        if variant is None or task is None:
            return
        run = self.context.run_info(exp)
        files = TrialDir(run.paths.trial_dir(tid.variant, tid.task, tid.trial), run.redactor)
        killed = kill_processes_with_env("EVALRUN_TRIAL_DIR", str(files.path))
        base = files.previous_outcome_fields()
        base.update(
            experiment=exp.name,
            variant=variant.name,
            task=task.name,
            trial=tid.trial,
            experiment_slug=exp.slug,
            variant_slug=tid.variant,
            task_slug=tid.task,
            run_id=run.paths.run_id,
            nodeid=nodeid,
            trial_dir=str(files.path),
            status=ERROR,
        )
        outcome = TrialOutcome.from_dict(base)
        outcome.error_kind = "worker_crashed"
        outcome.crashed = True
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        outcome.worker = str(gateway.id) if gateway is not None else None
        outcome.message = (
            f"the worker running this trial crashed ({killed} leftover processes killed)"
        )
        outcome.finished_at = runs.utc_now()
        self.context.recorders.record_crash(run, outcome)
        report.user_properties = [*report.user_properties, (USER_PROPERTY, outcome.to_dict())]
        report.longrepr = f"{report.longrepr}\nERROR (worker crashed): trial directory {files.path}"

    # -- at the end ------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.config.option.collectonly or self.refused:
            return
        if not self.collected and not self.outcomes and not self.spec_errors:
            return
        self.finish(session, exitstatus)
        session.exitstatus = self.exit_status(exitstatus)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.summary is None:
            return
        from .report.terminal import render_terminal

        terminalreporter.section("evalrun")
        for line in render_terminal(self.summary):
            terminalreporter.write_line(line)
        for message in self.spec_errors.values():
            terminalreporter.write_line(f"experiment file error: {bounded(message)}", red=True)
        if self.interrupted is not None:
            from .interrupt import resume_command
            from .report.terminal import interrupted_lines

            stopped, not_started, run_ids = self.interrupted
            command = resume_command(self.shared.pytest_args, run_ids)
            for line in interrupted_lines(stopped, not_started, command):
                terminalreporter.write_line(line, yellow=True, bold=True)

    def _runs(self) -> dict[tuple[str, str], RunResult]:
        grouped: dict[tuple[str, str], RunResult] = {}
        by_file: dict[str, Experiment | None] = {}

        def experiment(nodeid: str) -> Experiment | None:
            file = nodeid.split("::")[0]
            if file not in by_file:
                by_file[file] = self.experiment_of(nodeid)
            return by_file[file]

        for nodeid in self.collected:
            exp, tid = experiment(nodeid), TrialId.parse(nodeid)
            if exp is None or tid is None:
                continue
            key = (exp.slug, self.shared.run_id_for(exp.slug))
            run = grouped.setdefault(key, RunResult(exp, key[1]))
            run.collected += 1
            run.variant_slugs.add(tid.variant)
            run.task_slugs.add(tid.task)
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

    def _gates(self, exp: Experiment) -> Gates:
        """Every gate's inputs of ``exp``'s run in this session (recorded in run.json)."""
        regression = None
        ref = self.config.getoption("eval_baseline_run")
        if ref:
            from .store.baseline import baseline_counts, rerun_judged

            run_id = self.baselines.get(exp.slug)
            results = Path(self.shared.results)
            regression = RegressionGate(
                ref=str(ref),
                run_id=run_id,
                counts=baseline_counts(results, exp.slug, run_id) if run_id else {},
                note=self.no_baseline.get(exp.slug),
                notes=tuple(self.baseline_notes.get(exp.slug, ())),
                rerun_judged=(
                    rerun_judged(RunPaths(results, exp.slug, run_id).summary_json)
                    if run_id
                    else None
                ),
            )
        return Gates(
            min_pass_rate=self.config.getoption("eval_min_pass_rate"),
            baseline_variant=self.config.getoption("eval_baseline"),
            alpha=self.config.getoption("eval_alpha"),
            errors=self.error_policy,
            retry=tuple(sorted(self.shared.retry)),
            regression=regression,
        )

    def _error_policy(self) -> str:
        policy = self.config.getoption("eval_errors") or str(
            self.config.getini("evalrun_errors") or "count"
        )
        if policy not in ERROR_POLICIES:
            raise pytest.UsageError(
                f"evalrun_errors = {policy!r}: use one of {', '.join(ERROR_POLICIES)}"
            )
        return policy

    def finish(self, session: pytest.Session, exitstatus: int) -> None:
        stopped: dict[str, TrialOutcome] = {}
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            from .interrupt import recover_interrupted

            stopped = recover_interrupted(
                self.collected, self.outcomes, self.experiment_of,
                lambda exp: self.context.run_info(exp).paths, self.shared.session_id,
            )  # fmt: skip
            self.outcomes.update(stopped)
        grouped = self._runs()
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        if interrupted:
            self.interrupted = (
                len(stopped),
                sum(max(run.collected - len(run.outcomes), 0) for run in grouped.values()),
                {run.run_id for run in grouped.values()},
            )
        parts: list[Summary] = []
        for (_, run_id), run in grouped.items():
            exp = run.experiment
            gates = self._gates(exp)
            done = finish_run(
                run.outcomes,
                Plan.from_json(experiment_plan(exp)),
                gates,
                experiment=exp.name,
                variants=[v.name for v in exp.variants if v.slug in run.variant_slugs],
                tasks=[t.name for t in exp.tasks if t.slug in run.task_slugs],
                task_slugs=run.task_slugs,
                total=run.collected,
                run_id=run_id,
                results_dir=str(Path(self.shared.results) / exp.slug / run_id),
                jobs_dir=str(Path(self.shared.jobs)),
            )
            parts.append(done.summary)
            info = self.context.run_info(exp, run_id=run_id, n_total=run.collected)
            finished = FinishedRun(
                run=info,
                outcomes=run.outcomes,
                summary=done.summary,
                status=self._status(exitstatus, interrupted, done.counts["not_run"], session),
                counts=done.counts,
                ran=bool(run.outcomes) or runs.read_run(info.paths) is not None,
                gates=gates.to_json(),
            )
            for problem in self.context.recorders.finish_run(finished):
                self.config.issue_config_time_warning(
                    pytest.PytestWarning(f"pytest-evalrun: {problem}"), 2
                )
            if finished.ran:
                self.run_dirs.append(info.paths.run_dir)
        self.summary = combine_summaries(
            parts,
            cli_min_pass_rate=self.config.getoption("eval_min_pass_rate"),
            baseline=self.config.getoption("eval_baseline"),
        )
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

    def _write_combined(self) -> None:
        assert self.summary is not None
        md = self.config.getoption("eval_summary_md")
        if md:
            write_text_atomic(Path(md).resolve(), render_markdown(self.summary))
        om = self.config.getoption("eval_openmetrics")
        if om:
            write_text_atomic(Path(om).resolve(), render_openmetrics(self.summary))
        verdict = self.config.getoption("eval_junit_verdict")
        if verdict:
            from .report.junit_verdict import render_verdict  # only for --eval-junit-verdict

            write_text_atomic(Path(verdict).resolve(), render_verdict(self.summary))

    # -- verdict ---------------------------------------------------------------------------
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


def _dist_given(config: pytest.Config) -> bool:
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    args += [str(a) for a in config.getini("addopts")]
    return any(a in ("--dist", "-d", "--distload") or a.startswith("--dist=") for a in args)
