"""A trial whose recorded outcome ``--eval-resume`` reuses is not run: its reports are replayed
without pytest's setup/call/teardown. What a user sees must be what pytest's own protocol
shows for it: the same reports (outcome, long representation, sections, keywords, location,
user properties), the same terminal output (``-v``, ``-rA``, the failure sections), the same
JUnit XML, ``--lf``'s record and ``-x``'s stop, and the ordinary tests and trials that run in
the same session still set up and tear down their fixtures as before.

Each case resumes the same recorded state twice: once as shipped, once with pytest's own
``pytest_runtest_protocol`` put in front of ours (the reference), and compares the two."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import Suite

#: Records, in every process, each report the controller sees (after our own hooks took
#: the outcome out of it), logstart/logfinish, which items pytest's setup hook ran for, and
#: the ordinary tests' fixtures. With REFERENCE_PROTOCOL=1 pytest's own runtest protocol is
#: registered in front of ours (after it, so that it is called first).
CONFTEST = r'''
import json, os
import pytest

def _log(**event):
    with open(os.environ["REPLAY_LOG"], "a") as fh:
        fh.write(json.dumps(event, sort_keys=True) + "\n")

_config = []

def pytest_configure(config):
    _config.append(config)

def _controller():
    return not hasattr(_config[-1], "workerinput")

class Reference:
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        from _pytest.runner import pytest_runtest_protocol as protocol
        return protocol(item=item, nextitem=nextitem)

def pytest_sessionstart(session):
    if os.environ.get("STOP_AFTER"):
        session.config.pluginmanager.register(Stopper(session), "stopper")
    if os.environ.get("REFERENCE_PROTOCOL") == "1":
        session.config.pluginmanager.register(Reference(), "reference-protocol")

def pytest_runtest_logstart(nodeid, location):
    if _controller():
        _log(event="logstart", nodeid=nodeid, location=list(location))

def pytest_runtest_logfinish(nodeid, location):
    if _controller():
        _log(event="logfinish", nodeid=nodeid, location=list(location))

class Stopper:
    """Stops the session after a given item's call report (as --stepwise does after a
    failure), here after a passing reused trial."""
    def __init__(self, session):
        self.session = session

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.nodeid == os.environ.get("STOP_AFTER"):
            self.session.shouldstop = "stopped by the test"

@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    if not _controller():
        return
    _log(event="report", nodeid=report.nodeid, when=report.when, outcome=report.outcome,
         longrepr=report.longreprtext, sections=[list(s) for s in report.sections],
         keywords=sorted(report.keywords), location=list(report.location),
         props=[[k, repr(v)] for k, v in report.user_properties],
         timed=0 <= report.duration and report.start <= report.stop,
         head=report.head_line, crash=repr(getattr(report.longrepr, "reprcrash", None)))

def pytest_runtest_setup(item):
    _log(event="setup-hook", nodeid=item.nodeid)

@pytest.fixture(scope="session")
def session_thing():
    _log(event="fixture", name="session", step="setup")
    yield 1
    _log(event="fixture", name="session", step="teardown")

@pytest.fixture(scope="module")
def module_thing():
    _log(event="fixture", name="module", step="setup")
    yield 2
    _log(event="fixture", name="module", step="teardown")
'''

#: Ordinary tests collected before the experiment file (``a_test.py``) and after it
#: (``test_z.py``): a resume session mixes them with reused and re-run trials.
BEFORE = """
def test_one(session_thing, module_thing):
    assert session_thing == 1

def test_two(module_thing):
    print("output of test_two")
    assert module_thing == 2
"""
AFTER = """
def test_after(module_thing):
    assert module_thing == 2

def test_after_fails(session_thing):
    assert session_thing == 3
"""


def _snapshot(root: Path, into: Path) -> None:
    for name in ("results", "jobs", ".pytest_cache"):
        if (root / name).exists():
            shutil.copytree(root / name, into / name, symlinks=True)


def _restore(root: Path, frm: Path) -> None:
    for name in ("results", "jobs", ".pytest_cache"):
        shutil.rmtree(root / name, ignore_errors=True)
        if (frm / name).exists():
            shutil.copytree(frm / name, root / name, symlinks=True)


def _terminal(text: str, xdist: bool) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"\b\d+(\.\d+)?s\b", "Ns", line)  # durations (also the re-run trial's)
        line = re.sub(r"\bgw\d+\b", "gw", line)  # which worker ran what
        line = re.sub(r"runpytest-\d+", "runpytest-N", line)  # pytester's --basetemp
        line = re.sub(r"\s*\[\s*\d+%\]", "", line)  # xdist's progress follows arrival order
        out.append(line.rstrip("= "))  # a separator's length follows the duration's
    return sorted(out) if xdist else out


def _junit(path: Path, xdist: bool) -> list[str]:
    root = ET.parse(path).getroot()
    for el in root.iter():
        for key in ("time", "timestamp", "hostname"):
            el.attrib.pop(key, None)
    cases = []
    for suite in root.iter("testsuite"):
        for case in list(suite.iter("testcase")):
            cases.append(ET.tostring(case, encoding="unicode"))
            suite.remove(case)
    if xdist:
        cases.sort()
    return [ET.tostring(root, encoding="unicode"), *cases]


def _events(log: Path, xdist: bool) -> dict[str, Any]:
    text = re.sub(r"\bgw\d+\b", "gw", log.read_text())  # which worker ran what
    events = [json.loads(line) for line in text.splitlines()]
    reports = [e for e in events if e["event"] != "setup-hook"]
    return {
        # under xdist the workers' reports arrive in any order: compare them sorted
        "reports": sorted(reports, key=json.dumps) if xdist else reports,
        "fixtures": [e for e in events if e["event"] == "fixture"],
        "setup_hook": sorted(e["nodeid"] for e in events if e["event"] == "setup-hook"),
    }


def _resume(suite: Suite, state: Path, args: tuple[str, ...], reference: bool,
            monkeypatch: pytest.MonkeyPatch, tag: str) -> dict[str, Any]:
    _restore(suite.root, state)
    stop = "exp.eval.yaml::base::good::trial-001" if "--stop-after-a-reused-trial" in args else ""
    monkeypatch.setenv("STOP_AFTER", stop)
    args = tuple(a for a in args if a != "--stop-after-a-reused-trial")
    log = suite.root / f"replay-{tag}.log"
    monkeypatch.setenv("REPLAY_LOG", str(log))
    monkeypatch.setenv("REFERENCE_PROTOCOL", "1" if reference else "0")
    junit = suite.root / "junit.xml"  # its path is in the terminal output
    r = suite.pytester.runpytest_subprocess("--eval-resume", f"--junitxml={junit}", *args)
    xdist = "-n" in args
    lastfailed = suite.root / ".pytest_cache" / "v" / "cache" / "lastfailed"
    return {
        "ret": r.ret,
        "terminal": _terminal(r.stdout.str(), xdist),
        "junit": _junit(junit, xdist),
        "lastfailed": json.loads(lastfailed.read_text()) if lastfailed.exists() else None,
        **_events(log, xdist),
    }


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("-p", "no:xdist", "-v", "-rA"), id="serial-verbose-rA"),
        pytest.param(("-p", "no:xdist", "-x", "-rA"), id="serial-maxfail"),
        pytest.param(("-p", "no:xdist", "-k", "exp", "-x", "-v"), id="serial-trials-only-maxfail"),
        pytest.param(("-p", "no:xdist", "--lf", "-v"), id="serial-last-failed"),
        # a plugin stops the session after a passing reused trial: the session fixture is
        # torn down after it (its teardown report as pytest's own)
        pytest.param(("-p", "no:xdist", "-rA", "--stop-after-a-reused-trial"), id="serial-stopped"),
        pytest.param(("-n", "2", "-v", "-rA"), id="xdist-verbose-rA"),
        pytest.param(("-n", "2", "--lf", "-rA"), id="xdist-last-failed"),
    ],
)
def test_a_reused_trial_is_reported_as_pytests_own_protocol_reports_it(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...]
) -> None:
    suite.write("conftest.py", CONFTEST)
    suite.write("a_test.py", BEFORE)
    suite.write("test_z.py", AFTER)
    suite.experiment(trials=3)
    monkeypatch.setenv("REPLAY_LOG", str(suite.root / "first.log"))
    first = suite.pytester.runpytest_subprocess("-p", "no:xdist")
    first.assert_outcomes(passed=6, failed=4)
    # trial 2 of "good" runs again in the resume (no record), between reused ones
    (suite.trial_dir("base", "good", 2) / "meta.json").unlink()
    state = tmp_path / "state"
    _snapshot(suite.root, state)

    shipped = _resume(suite, state, args, False, monkeypatch, "shipped")
    reference = _resume(suite, state, args, True, monkeypatch, "reference")

    # the shipped session did replay: pytest's setup hook ran for what was run, not for the
    # reused trials (the reference ran it for every item); but with -x, a reused failure after
    # which the session fixture would be torn down goes through pytest's protocol
    ran = [n for n in reference["setup_hook"] if "::trial-" not in n or "good::trial-002" in n]
    if "-x" in args and "-k" not in args:
        ran = sorted([*ran, "exp.eval.yaml::base::bad::trial-001"])
    assert shipped["setup_hook"] == ran
    assert any("::trial-" in n for n in set(reference["setup_hook"]) - set(shipped["setup_hook"]))
    # and the user sees the same
    for key in ("ret", "terminal", "junit", "lastfailed", "reports", "fixtures"):
        assert shipped[key] == reference[key], key
    assert any(e.get("outcome") == "failed" and "::bad::" in e["nodeid"]
               for e in shipped["reports"]) != ("--stop-after-a-reused-trial" in args)
    if "--lf" not in args and "-k" not in args:
        assert {e["name"] for e in shipped["fixtures"]} == {"session", "module"}
    if "--stop-after-a-reused-trial" in args:
        assert shipped["fixtures"][-1] == {"event": "fixture", "name": "session",
                                           "step": "teardown"}
        assert not any("good::trial-002" in e.get("nodeid", "") for e in shipped["reports"])
