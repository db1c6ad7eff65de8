"""Unit tests of the two role plugins with fake reports and spy recorders.

The end-to-end tests reach the roles through real sessions; these call them directly, with a
real pytest config (``pytester.parseconfigure``) and hand-made ``TestReport`` objects, so that
each rule has a test that names it.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import Suite

from pytest_evalrun.collect import EXPERIMENT_ERROR_PROPERTY, TrialId, is_trial_nodeid
from pytest_evalrun.context import EvalContext, context_key
from pytest_evalrun.controller import ControllerPlugin
from pytest_evalrun.experiment.model import Task, Variant
from pytest_evalrun.outcome import USER_PROPERTY, TrialOutcome
from pytest_evalrun.store.index import connect
from pytest_evalrun.store.recorder import FinishedRun, Recorder, Recorders, RunInfo
from pytest_evalrun.worker import WorkerPlugin


class Spy(Recorder):
    name = "spy"

    def __init__(self, essential: bool = True, fail_on: str = "") -> None:
        self.essential = essential
        self.fail_on = fail_on
        self.calls: list[tuple[str, Any]] = []

    def _note(self, what: str, detail: Any) -> None:
        self.calls.append((what, detail))
        if what == self.fail_on:
            raise OSError(f"spy refuses {what}")

    def start_run(self, run: RunInfo) -> None:
        self._note("start_run", run.paths.run_id)

    def begin_trial(
        self, run: RunInfo, variant: Variant, task: Task, trial: int
    ) -> Mapping[str, Any]:
        self._note("begin_trial", (variant.name, task.name, trial))
        return {"pier_trial_dir": f"/spy/{task.slug}-{trial}"}

    def record_trial(
        self, run: RunInfo, outcome: TrialOutcome, variant: Variant, task: Task
    ) -> Mapping[str, Any]:
        self._note("record_trial", (outcome.task, outcome.status, outcome.pier_trial_dir))
        return {}

    def relabel(self, run: RunInfo, outcome: TrialOutcome, labels: Mapping[str, Any]) -> None:
        self._note("relabel", dict(labels))

    def record_crash(self, run: RunInfo, outcome: TrialOutcome) -> None:
        self._note("record_crash", (outcome.nodeid, outcome.error_kind))

    def finish_run(self, finished: FinishedRun) -> None:
        self._note("finish_run", (finished.status, len(finished.outcomes), finished.ran))


class Hooks:
    """Stands in for ``config.hook`` in the worker."""

    def __init__(self) -> None:
        self.finished: list[str] = []

    def pytest_evalrun_trial_env(self, env: dict[str, str], **kw: Any) -> None:
        env["MY_FROM_HOOK"] = "yes"

    def pytest_evalrun_trial_finished(self, outcome: TrialOutcome, trial_dir: Path) -> None:
        self.finished.append(outcome.nodeid)


def _configure(suite: Suite) -> tuple[pytest.Config, EvalContext]:
    config = suite.pytester.parseconfigure(str(suite.root), "-p", "no:cacheprovider")
    return config, config.stash[context_key]


def _report(
    nodeid: str, when: str, outcome: str, props: list[tuple[str, Any]]
) -> pytest.TestReport:
    return pytest.TestReport(
        nodeid=nodeid,
        location=("exp.eval.yaml", 0, nodeid),
        keywords={},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=None if outcome == "passed" else "boom",
        when=when,  # type: ignore[arg-type]
        user_properties=props,
    )


# -- node ids ------------------------------------------------------------------------------
def test_trial_ids_are_built_and_parsed_in_one_place() -> None:
    tid = TrialId("sub/exp.eval.yaml", "base", "good", 12)
    assert tid.nodeid == "sub/exp.eval.yaml::base::good::trial-012"
    assert TrialId.parse(tid.nodeid) == tid
    assert TrialId.parse("sub/exp.eval.yaml::base::good::trial-1234") == TrialId(
        "sub/exp.eval.yaml", "base", "good", 1234
    )
    for other in (
        "tests/test_x.py::test_a",
        "exp.eval.yaml::experiment-file-error",
        "exp.eval.yaml::base::good::trial-x",
        "exp.py::base::good::trial-001",
        "exp.eval.yaml::base::good::case-001",
    ):
        assert TrialId.parse(other) is None
        assert not is_trial_nodeid(other)


# -- the controller ------------------------------------------------------------------------
def test_roles_registered_in_a_lone_process(suite: Suite) -> None:
    suite.experiment()
    config, context = _configure(suite)
    assert isinstance(config.pluginmanager.get_plugin("evalrun-controller"), ControllerPlugin)
    worker = config.pluginmanager.get_plugin("evalrun-worker")
    assert isinstance(worker, WorkerPlugin)
    assert context.runner is worker


def test_controller_takes_outcomes_out_of_reports(suite: Suite) -> None:
    suite.experiment()
    config, _ = _configure(suite)
    controller = config.pluginmanager.get_plugin("evalrun-controller")
    nodeid = "exp.eval.yaml::base::good::trial-001"
    outcome = TrialOutcome("exp", "base", "good", 1, "passed", nodeid=nodeid, trial_dir="/t")
    other = ("mine", "kept")
    for when in ("setup", "call", "teardown"):
        report = _report(nodeid, when, "passed", [(USER_PROPERTY, outcome.to_dict()), other])
        controller.on_report(report)
        assert report.user_properties == [other]  # ours removed, the user's kept
    assert list(controller.outcomes) == [nodeid]
    assert controller.outcomes[nodeid].status == "passed"
    bad = _report("bad.eval.yaml::experiment-file-error", "setup", "failed", [])
    bad.user_properties = [(EXPERIMENT_ERROR_PROPERTY, "bad.eval.yaml:3: unknown key")]
    controller.on_report(bad)
    assert controller.spec_errors == {
        "bad.eval.yaml::experiment-file-error": "bad.eval.yaml:3: unknown key"
    }


def test_an_outcome_read_back_is_the_one_recorded() -> None:
    """from_dict (what --eval-resume and the controller read) gives what the constructor
    gives: every field, in order; fresh containers for the ones not given; keys that are
    not fields ignored; a record missing a required field is a TypeError (never an outcome)."""
    full = TrialOutcome(
        "exp", "base", "good", 3, "failed", reward=0.5, rewards={"a": 0.5}, message="m",
        attempts=[{"attempt": 1}], isolation={"sandbox": "none"}, resumed=True, seed=7,
    )
    full.metrics.input_tokens = 12
    data = {**full.to_dict(), "schema_version": 1, "success": False, "steps": {}}
    back = TrialOutcome.from_dict(data)
    assert back == full and list(vars(back)) == list(vars(full))
    few = {"experiment": "e", "variant": "v", "task": "t", "trial": 1, "status": "passed"}
    one, two = TrialOutcome.from_dict(dict(few)), TrialOutcome.from_dict(dict(few))
    assert one == TrialOutcome("e", "v", "t", 1, "passed")
    assert list(vars(one)) == list(vars(TrialOutcome("e", "v", "t", 1, "passed")))
    assert one.rewards is not two.rewards and one.attempts is not two.attempts
    assert one.metrics is not two.metrics and one.isolation is not two.isolation
    with pytest.raises(TypeError):
        TrialOutcome.from_dict({"experiment": "e", "variant": "v", "task": "t", "trial": 1})


def test_controller_takes_a_lone_process_outcome_as_handed(suite: Suite) -> None:
    """In one process the item hands its outcome over with the dict its report carries: the
    controller keeps that object; a report carrying another dict (a copy, as from an xdist
    worker) is read from the dict."""
    suite.experiment()
    config, context = _configure(suite)
    controller = config.pluginmanager.get_plugin("evalrun-controller")
    ids = [f"exp.eval.yaml::base::good::trial-00{n}" for n in (1, 2)]
    outcomes = [TrialOutcome("exp", "base", "good", n, "passed", nodeid=i, trial_dir="/t")
                for n, i in enumerate(ids, 1)]
    sent = [o.to_dict() for o in outcomes]
    for nodeid, data, outcome in zip(ids, sent, outcomes, strict=True):
        context.handed[nodeid] = (data, outcome)
    controller.on_report(_report(ids[0], "setup", "passed", [(USER_PROPERTY, sent[0])]))
    controller.on_report(_report(ids[1], "setup", "passed", [(USER_PROPERTY, dict(sent[1]))]))
    assert controller.outcomes[ids[0]] is outcomes[0]
    assert controller.outcomes[ids[1]] is not outcomes[1]
    assert controller.outcomes[ids[1]] == outcomes[1]
    assert context.handed == {}  # each taken once


def test_items_let_go_of_the_outcome_dict_once_reported(suite: Suite) -> None:
    """The outcome's dict rides on the setup report, which the controller reads: the item does
    not keep it to the session's end (one per trial: a large session's memory), whether its
    trial passed or failed; the controller has every outcome."""
    suite.experiment()
    rec = suite.pytester.inline_run(str(suite.root), "-p", "no:cacheprovider", "-p", "no:xdist")
    (finished,) = rec.getcalls("pytest_collection_finish")
    items = finished.session.items
    assert len(items) == 2
    assert all(USER_PROPERTY not in dict(item.user_properties) for item in items)
    controller = items[0].config.pluginmanager.get_plugin("evalrun-controller")
    assert {n: o.status for n, o in controller.outcomes.items()} == {
        item.nodeid: status for item, status in zip(items, ("passed", "failed"), strict=True)
    }


FREEZE_PROBE = """
import gc, json, pathlib

def pytest_runtest_setup(item):
    with open(pathlib.Path(__file__).parent / "frozen.jsonl", "a") as fh:
        fh.write(json.dumps([item.nodeid, gc.get_freeze_count()]) + "\\n")
"""


@pytest.mark.parametrize("with_test", [False, True], ids=["trials-only", "with-a-test"])
def test_collected_objects_are_frozen_only_in_a_trials_only_session(
    suite: Suite, with_test: bool
) -> None:
    """A session of trial items only runs no test code of the user's: what collection built is
    frozen for the garbage collector (gc.freeze) while the trials run, and thawed once the
    session is over, so an in-process run leaves nothing frozen behind. A session that also
    runs an ordinary test is left alone."""
    suite.experiment()
    suite.write("conftest.py", FREEZE_PROBE)
    if with_test:
        suite.write("test_plain.py", "def test_plain():\n    pass\n")
    assert gc.get_freeze_count() == 0
    rec = suite.pytester.inline_run(str(suite.root), "-p", "no:cacheprovider", "-p", "no:xdist")
    rec.assertoutcome(passed=1 + with_test, failed=1)
    assert gc.get_freeze_count() == 0  # thawed at the session's end
    seen = [json.loads(line) for line in (suite.root / "frozen.jsonl").read_text().splitlines()]
    assert len(seen) == 2 + with_test
    frozen = {nodeid: count > 0 for nodeid, count in seen}
    assert set(frozen.values()) == {not with_test}


def test_controller_records_a_crashed_worker_trial(suite: Suite) -> None:
    suite.experiment()
    config, context = _configure(suite)
    spy = Spy()
    context.recorders = Recorders([*context.recorders, spy])
    controller = config.pluginmanager.get_plugin("evalrun-controller")
    nodeid = "exp.eval.yaml::base::bad::trial-001"
    trial_dir = context.run_info(controller.experiment_of(nodeid)).paths.trial_dir("base", "bad", 1)
    trial_dir.mkdir(parents=True)
    (trial_dir / "meta.json").write_text(
        json.dumps({"status": "running", "steps": {"agent": {"exit_code": None}}, "seed": 7})
    )
    report = _report(nodeid, "???", "failed", [])
    controller.on_crash(nodeid, report)
    meta = json.loads((trial_dir / "meta.json").read_text())
    assert meta["status"] == "error" and meta["error_kind"] == "worker_crashed"
    assert meta["crashed"] is True and meta["seed"] == 7  # what was recorded is kept
    assert meta["steps"] == {"agent": {"exit_code": None}}
    assert ("record_crash", (nodeid, "worker_crashed")) in spy.calls
    carried = dict(report.user_properties)[USER_PROPERTY]
    assert carried["status"] == "error" and carried["nodeid"] == nodeid
    assert str(trial_dir) in str(report.longrepr)
    with connect(suite.results() / "index.db") as conn:
        rows = conn.execute("SELECT status, crashed FROM trials WHERE task='bad'").fetchall()
    assert rows == [("error", 1)]
    # A node id that is not a trial, or of a file that does not exist, is left alone.
    controller.on_crash(
        "tests/test_x.py::test_a", _report("tests/test_x.py::test_a", "call", "failed", [])
    )
    controller.on_crash("gone.eval.yaml::a::b::trial-001", _report("x", "call", "failed", []))
    assert [c for c in spy.calls if c[0] == "record_crash"] == [
        ("record_crash", (nodeid, "worker_crashed"))
    ]


def test_controller_verdict_follows_the_gate(suite: Suite) -> None:
    suite.experiment(min_pass_rate=1.0)
    config, context = _configure(suite)
    spy = Spy()
    context.recorders = Recorders([spy])
    controller = config.pluginmanager.get_plugin("evalrun-controller")
    ids = ["exp.eval.yaml::base::good::trial-001", "exp.eval.yaml::base::bad::trial-001"]
    controller.set_collected(ids)
    statuses = {"good": "passed", "bad": "failed"}
    run_id = context.shared.run_id
    for nodeid in ids:
        task = TrialId.parse(nodeid).task  # type: ignore[union-attr]
        o = TrialOutcome("exp", "base", task, 1, statuses[task], nodeid=nodeid, run_id=run_id)
        controller.on_report(_report(nodeid, "call", "passed", [(USER_PROPERTY, o.to_dict())]))

    class Session:
        shouldstop = shouldfail = False

    controller.finish(Session(), pytest.ExitCode.TESTS_FAILED)  # type: ignore[arg-type]
    assert spy.calls == [("finish_run", ("completed", 2, True))]
    # "bad" is 0/1 below its 1.0 gate: the verdict fails the session
    assert controller.summary is not None and controller.summary["verdict"]["passed"] is False
    assert controller.exit_status(pytest.ExitCode.TESTS_FAILED) == pytest.ExitCode.TESTS_FAILED
    # an interrupted session stays interrupted, whatever the gates say
    assert controller.exit_status(pytest.ExitCode.INTERRUPTED) == pytest.ExitCode.INTERRUPTED


def test_controller_passes_when_every_gate_holds(suite: Suite) -> None:
    suite.experiment(min_pass_rate=0.5)
    config, context = _configure(suite)
    context.recorders = Recorders([])
    controller = config.pluginmanager.get_plugin("evalrun-controller")
    nodeid = "exp.eval.yaml::base::good::trial-001"
    controller.set_collected([nodeid])
    o = TrialOutcome(
        "exp", "base", "good", 1, "passed", nodeid=nodeid, run_id=context.shared.run_id
    )
    controller.on_report(_report(nodeid, "call", "passed", [(USER_PROPERTY, o.to_dict())]))

    class Session:
        shouldstop = shouldfail = False

    controller.finish(Session(), pytest.ExitCode.OK)  # type: ignore[arg-type]
    assert controller.exit_status(pytest.ExitCode.OK) == pytest.ExitCode.OK


# -- the worker ----------------------------------------------------------------------------
def test_worker_runs_a_trial_through_the_recorders(suite: Suite) -> None:
    suite.experiment()
    _config, context = _configure(suite)
    spy = Spy()
    context.recorders = Recorders([spy])
    hooks = Hooks()
    worker = WorkerPlugin(context, hooks)
    exp = context.discovery.load(suite.root / "exp.eval.yaml")
    variant, task = exp.variants[0], exp.tasks[0]  # type: ignore[union-attr]
    nodeid = "exp.eval.yaml::base::good::trial-001"
    outcome = worker.run_trial_item(nodeid, exp, variant, task, 1)  # type: ignore[arg-type]
    assert outcome.status == "passed" and outcome.nodeid == nodeid
    assert outcome.pier_trial_dir == "/spy/good-1"  # begin_trial's labels reach the outcome
    assert [c[0] for c in spy.calls] == ["start_run", "begin_trial", "record_trial"]
    assert spy.calls[2][1] == ("good", "passed", "/spy/good-1")
    meta = json.loads((Path(outcome.trial_dir) / "meta.json").read_text())
    assert meta["pier_trial_dir"] == "/spy/good-1" and meta["nodeid"] == nodeid
    assert hooks.finished == [nodeid]


def test_worker_reuses_a_standing_trial_on_resume(suite: Suite) -> None:
    suite.experiment()
    _config, context = _configure(suite)
    context.recorders = Recorders([])
    exp = context.discovery.load(suite.root / "exp.eval.yaml")
    variant, task = exp.variants[0], exp.tasks[1]  # type: ignore[union-attr]
    nodeid = "exp.eval.yaml::base::bad::trial-001"
    first = WorkerPlugin(context, Hooks()).run_trial_item(nodeid, exp, variant, task, 1)  # type: ignore[arg-type]
    assert first.status == "failed"
    from dataclasses import replace

    context.shared = replace(context.shared, resume=True)
    spy = Spy()
    context.recorders = Recorders([spy])
    again = WorkerPlugin(context, Hooks()).run_trial_item(nodeid, exp, variant, task, 1)  # type: ignore[arg-type]
    assert again.resumed and again.status == "failed" and again.started_at == first.started_at
    assert spy.calls == []  # nothing ran, nothing recorded again


def test_a_failing_non_essential_recorder_never_loses_the_trial(suite: Suite) -> None:
    suite.experiment()
    _config, context = _configure(suite)
    flaky = Spy(essential=False, fail_on="record_trial")
    witness = Spy()
    context.recorders = Recorders([flaky, witness])
    exp = context.discovery.load(suite.root / "exp.eval.yaml")
    variant, task = exp.variants[0], exp.tasks[0]  # type: ignore[union-attr]
    nodeid = "exp.eval.yaml::base::good::trial-001"
    outcome = WorkerPlugin(context, Hooks()).run_trial_item(nodeid, exp, variant, task, 1)  # type: ignore[arg-type]
    assert outcome.status == "passed"
    assert "spy not written: OSError: spy refuses record_trial" in outcome.message
    assert ("relabel", {"message": outcome.message}) in witness.calls
    # an essential recorder's failure is not hidden
    # (trial 2: trial 1 is recorded now, and a recorded trial is never run twice)
    context.recorders = Recorders([Spy(fail_on="record_trial")])
    with pytest.raises(OSError):
        WorkerPlugin(context, Hooks()).run_trial_item(nodeid, exp, variant, task, 2)  # type: ignore[arg-type]
