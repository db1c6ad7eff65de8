"""A trial whose recorded outcome ``--eval-resume`` reuses is not run: its reports are replayed.

pytest's runtest protocol would take such a trial through setup, call and teardown (each
through the capture, logging and other plugins' hooks, for an item that does nothing). Instead
the worker's ``pytest_runtest_protocol`` hands it here, and this module reports it as that
protocol would: ``pytest_runtest_logstart``, the setup report (passed, carrying the outcome in
its user properties), the call report (passed, or failed with the one line a reused failure
shows) and the teardown report through ``pytest_runtest_logreport``, and
``pytest_runtest_logfinish`` (as xdist's controller replays its workers' reports). pytest's
SetupState sees the trial's collectors set up and torn down around it as before, so the items
run before and after it (trials and ordinary tests) set up and tear down theirs as before.

A trial is replayed only when nothing pytest would do for it could differ: not with
``--pdb``/``--trace``/``--setup-show``/``--setup-only``/``--setup-plan``, not when it is
marked ``skip``/``skipif``/``xfail``, and only when each collector set up for it does nothing
on setup (an experiment file's, a directory's); otherwise it goes through pytest's own
protocol, as every trial that runs does; so does a trial after which a teardown that does
something would run (a fixture's finalizer, a package's ``teardown_module``): before the next
item's own collectors, or all of them when its failure may stop the session (``-x``,
``--maxfail``, ``--stepwise``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from .collect import TrialItem, describe
from .outcome import USER_PROPERTY, TrialOutcome

if TYPE_CHECKING:
    from _pytest.nodes import Node

#: Markers whose handling (pytest's skipping plugin) lives in the hooks a replay skips.
_MARKERS_NEEDING_THE_PROTOCOL = frozenset({"skip", "skipif", "xfail"})
#: Options under which pytest shows or does something of its own for each item.
_OPTIONS_NEEDING_THE_PROTOCOL = ("usepdb", "trace", "setupshow", "setuponly", "setupplan")
_NOOP_SETUP = pytest.Collector.setup
_NOOP_TEARDOWN = pytest.Collector.teardown


def replays_allowed(config: pytest.Config) -> bool:
    """May this session replay reused trials at all (no option that needs the protocol)?"""
    return not any(config.getoption(name, False) for name in _OPTIONS_NEEDING_THE_PROTOCOL)


def _quiet_setup(node: Node) -> bool:
    cls = type(node)
    return cls.setup is _NOOP_SETUP and cls.teardown is _NOOP_TEARDOWN


def _quiet_entry(entry: tuple[list[Any], Any]) -> bool:
    """A set-up node whose teardown does nothing: no finalizer but its own no-op teardown."""
    finalizers, failed = entry
    return (
        failed is None
        and len(finalizers) == 1
        and getattr(finalizers[0], "__func__", None) is _NOOP_TEARDOWN
    )


def replayable(item: TrialItem) -> bool:
    """Can ``item`` be replayed without skipping a setup that does something? (Its teardown:
    :func:`quiet_teardown`.)"""
    for mark in item.iter_markers():
        if mark.name in _MARKERS_NEEDING_THE_PROTOCOL:
            return False
    stack = item.session._setupstate.stack
    chain = item.listchain()[:-1]  # the item's collectors, from the session down
    if len(stack) > len(chain):
        return False
    for node, have in zip(stack, chain, strict=False):
        if node is not have or stack[node][1] is not None:  # not torn down, or its setup failed
            return False
    return all(_quiet_setup(node) for node in chain[len(stack):])


def quiet_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Does tearing down what ``nextitem`` does not share (SetupState.teardown_exact; all of
    it when None) run only no-op teardowns?"""
    stack = item.session._setupstate.stack
    nodes = list(stack)
    keep = 0
    if nextitem is not None:
        after = nextitem.listchain()
        while keep < min(len(nodes), len(after)) and nodes[keep] is after[keep]:
            keep += 1
    return all(_quiet_entry(stack[node]) for node in nodes[keep:])


def replay(item: TrialItem, nextitem: pytest.Item | None, outcome: TrialOutcome,
           data: dict[str, Any], started: float) -> None:
    """Report ``item`` as pytest's protocol reports a trial whose setup handed over
    ``outcome`` (``data``: its dict, the setup report's user property), without running it.
    ``started``: ``time.perf_counter()`` when the protocol began (the setup's duration)."""
    ihook = item.ihook
    nodeid, location = item.nodeid, item.location
    ihook.pytest_runtest_logstart(nodeid=nodeid, location=location)
    state = item.session._setupstate
    if len(state.stack) < len(item.listchain()) - 1:
        state.setup(item.parent)  # type: ignore[arg-type]  # the collectors only: no-ops
    keywords: dict[str, Any] = {name: 1 for name in item.keywords}
    sections = [(f"Captured {key} {when}", text) for when, key, text in item._report_sections]
    handed = [*item.user_properties, (USER_PROPERTY, data)]
    wall, now = time.time(), time.perf_counter()
    setup_time = now - started

    def report(when: Any, result: Any, longrepr: Any, props: list[tuple[str, object]],
               duration: float, start: float) -> pytest.TestReport:
        return pytest.TestReport(nodeid, location, dict(keywords), result, longrepr, when,
                                 sections, duration, start, start + duration, props)

    ihook.pytest_runtest_logreport(
        report=report("setup", "passed", None, handed, setup_time, wall - setup_time))
    passed = outcome.passed
    ihook.pytest_runtest_logreport(report=report(
        "call", "passed" if passed else "failed", None if passed else describe(outcome),
        list(handed), 0.0, time.time()))
    session = item.session
    if session.shouldfail or session.shouldstop:  # as the protocol: tear everything down
        nextitem = None
    if quiet_teardown(item, nextitem):
        start = time.time()
        state.teardown_exact(nextitem)
        teardown = report("teardown", "passed", None, list(item.user_properties),
                          time.time() - start, start)
    else:  # a plugin stopped the session on a passing trial: what -x would have torn down
        last = nextitem
        call = pytest.CallInfo.from_call(lambda: state.teardown_exact(last), "teardown")
        teardown = pytest.TestReport.from_item_and_call(item, call)
    ihook.pytest_runtest_logreport(report=teardown)
    ihook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
