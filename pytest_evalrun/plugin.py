"""pytest hooks: wires options, collection, the run and the reporters together.

Nothing here decides or computes anything itself; each hook hands over to the module that does.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from . import hookspecs
from .collect import ExperimentFile, SpecErrorItem, SpecProblem, TrialItem, TrialProblem
from .controller import Controller
from .options import add_options
from .session import (
    WORKERINPUT_KEY,
    EvalState,
    Shared,
    decide,
    make_discovery,
    reserve,
    scan_args,
    state_key,
)
from .trial.steps import StepKinds
from .trial.workspace import remove_session_templates


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _kinds(config: pytest.Config) -> StepKinds:
    kinds = StepKinds.builtin()
    for extra in config.hook.pytest_evalrun_agent_kinds():
        kinds.agent.update(extra or {})
    for extra in config.hook.pytest_evalrun_verify_kinds():
        kinds.verify.update(extra or {})
    return kinds


_sigterm_key = pytest.StashKey[Any]()


def _sigterm_as_interrupt(config: pytest.Config) -> None:
    """SIGTERM stops the run like Ctrl-C does: agents killed, run.json ``interrupted``."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    config.stash[_sigterm_key] = previous


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(state_key, None)
    if state is not None and not state.is_worker and state.shared.snapshots:
        remove_session_templates(Path(state.shared.snapshots))
    previous = config.stash.get(_sigterm_key, None)
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and WORKERINPUT_KEY in workerinput:
        shared = Shared(**workerinput[WORKERINPUT_KEY])
    else:
        shared = decide(config)
    kinds = _kinds(config)
    discovery = make_discovery(config, shared, sorted(kinds.agent), sorted(kinds.verify))
    if workerinput is None and not config.option.collectonly:
        scan_args(config, discovery)
        if discovery.found:  # this session will run trials: claim the run id
            shared = reserve(shared)
    state = EvalState(config, shared, discovery, kinds)
    config.stash[state_key] = state
    if not state.is_worker:
        state.controller = Controller(state)
    config.pluginmanager.register(SessionPlugin(config, state), "evalrun-session")
    _sigterm_as_interrupt(config)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    state: EvalState | None = config.stash.get(state_key, None)
    if state is None:
        return None
    scan_args(config, state.discovery)
    return True if state.discovery.ignored(collection_path) else None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    state: EvalState | None = parent.config.stash.get(state_key, None)
    if state is not None and state.discovery.is_experiment_file(file_path):
        experiment_file: ExperimentFile = ExperimentFile.from_parent(parent, path=file_path)
        return experiment_file
    return None


def _dist_given(config: pytest.Config) -> bool:
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    args += [str(a) for a in config.getini("addopts")]
    return any(a in ("--dist", "-d", "--distload") or a.startswith("--dist=") for a in args)


class SessionPlugin:
    """The hooks that need this session's state (registered in ``pytest_configure``)."""

    def __init__(self, config: pytest.Config, state: EvalState) -> None:
        self.config = config
        self.state = state
        self.controller = state.controller

    # -- xdist -----------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: hand the shared decisions to each worker."""
        node.workerinput[WORKERINPUT_KEY] = self.state.shared_as_dict()

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
        if self.controller is not None:
            self.controller.set_collected(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        if self.controller is not None:
            self.controller.on_crash(crashitem, report)

    # -- collection and run ----------------------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        counts: Counter[str] = Counter()
        for item in session.items:
            if isinstance(item, TrialItem):
                counts[item.experiment.slug] += 1
        self.state.collected_per_experiment = dict(counts)
        if self.controller is not None:
            self.controller.set_collected([item.nodeid for item in session.items])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        excinfo = call.excinfo
        if (
            isinstance(item, (TrialItem, SpecErrorItem))
            and excinfo is not None
            and excinfo.errisinstance((TrialProblem, SpecProblem))
        ):
            report.longrepr = item.repr_failure(excinfo)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Only the controller reads (and removes) our properties; a worker sends them on.
        if self.controller is not None:
            self.controller.on_report(report)

    def pytest_report_teststatus(self, report: pytest.TestReport) -> Any:
        if self.controller is None or report.when != "call":
            return None
        outcome = self.controller.outcomes.get(report.nodeid)
        if outcome is None or not outcome.resumed:
            return None
        word = f"{outcome.status.upper()} (resumed)"
        if report.passed:
            return "passed", ".", (word, {"green": True})
        return "failed", "F", (word, {"red": True})

    # -- the end ---------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        controller = self.controller
        if controller is None or self.config.option.collectonly:
            return
        if not controller.collected and not controller.outcomes and not controller.spec_errors:
            return
        controller.finish(session, exitstatus)
        session.exitstatus = controller.exit_status(exitstatus)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        controller = self.controller
        if controller is None or controller.summary is None:
            return
        from .report.terminal import render_terminal

        terminalreporter.section("evalrun")
        for line in render_terminal(controller.summary):
            terminalreporter.write_line(line)
        for message in controller.spec_errors.values():
            terminalreporter.write_line(f"experiment file error: {message}", red=True)
