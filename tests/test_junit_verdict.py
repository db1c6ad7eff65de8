"""--eval-junit-verdict: one testcase per gate, failing exactly when that gate fails; valid
JUnit read alike by junitparser and by the real mikepenz/action-junit-report (issue 18, case
7: CI showed red when the gate passed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import evalrun, run_pytest
from conftest import GOOD_AND_BAD, Suite
from gh_junit_action import run_action
from junit_xsd import load_junit_schema

from pytest_evalrun.report.junit_verdict import render_verdict


def _valid(path: Path) -> None:
    schema: Any = load_junit_schema()
    errors = [str(e).splitlines()[0] for e in schema.iter_errors(str(path))]
    assert not errors, "\n".join(errors)


def _cases(path: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """junitparser's reading: testcase name -> (result, its testsuite's properties)."""
    junitparser = pytest.importorskip("junitparser", reason="junitparser is not installed")
    xml = junitparser.JUnitXml.fromfile(str(path))
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for suite in xml:
        props = {p.name: p.value for p in suite.properties()}
        for case in suite:
            results = [type(r).__name__ for r in case.result]
            out[case.name] = (results[0].lower() if results else "passed", props)
    return out


def _session(suite: Suite, *args: str) -> int:
    done = run_pytest(
        suite.root, "--junitxml=trials.xml", "--eval-junit-verdict=verdict.xml", *args
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode


def test_one_testcase_per_gate_failing_exactly_when_it_fails(suite: Suite) -> None:
    suite.experiment(trials=2, variants={"a": {}, "b": {}})
    assert run_pytest(suite.root, "--eval-run-id=base").returncode == 1
    status = _session(
        suite, "--eval-run-id=cand", "--eval-baseline-run=base", "--eval-min-pass-rate=1.0"
    )
    assert status == 1  # bad (0/2) is below 1.0 in both variants
    path = suite.root / "verdict.xml"
    _valid(path)
    cases = _cases(path)
    assert sorted(cases) == sorted(
        [
            "exp / a / good: pass rate 100.0% (2/2), upper bound 100.0% (98.8% confidence) "
            ">= min 100.0%",
            "exp / a / bad: pass rate 0.0% (0/2), upper bound 88.8% (98.8% confidence) "
            "< min 100.0%",
            "exp / b / good: pass rate 100.0% (2/2), upper bound 100.0% (98.8% confidence) "
            ">= min 100.0%",
            "exp / b / bad: pass rate 0.0% (0/2), upper bound 88.8% (98.8% confidence) "
            "< min 100.0%",
            "exp / a: regression test against run base: 50.0% -> 50.0% (+0.0 pp, p=1): "
            "no regression detected",
            "exp / b: regression test against run base: 50.0% -> 50.0% (+0.0 pp, p=1): "
            "no regression detected",
            "exp run cand: gate FAILED (2 gated cell(s) below their min pass rate)",
        ]
    ), sorted(cases)
    for name, (result, _) in cases.items():
        assert result == ("failure" if "< min" in name or "FAILED" in name else "passed"), name
    result, props = next(v for k, v in cases.items() if k.startswith("exp / a / bad:"))
    assert props["evalrun.gate"] == "min_pass_rate" and props["evalrun.gate.met"] == "false"
    assert (props["evalrun.pass_rate"], props["evalrun.passed"], props["evalrun.n"]) == (
        "0.0", "0", "2",
    )  # fmt: skip
    assert props["evalrun.gate.threshold"] == "1.0"
    _, props = next(v for k, v in cases.items() if k.startswith("exp / b: regression"))
    assert props["evalrun.regression.baseline_run"] == "base"
    assert props["evalrun.regression.p_value"] == "1.0"
    assert props["evalrun.regressed"] == "false"
    # evalrun show writes the same file from the run's summary.json
    again = suite.root / "again.xml"
    shown = evalrun("show", "cand", "--junit-verdict", str(again), "--gate", cwd=suite.root)
    assert shown.returncode == 1
    assert again.read_text() == path.read_text()


def test_no_gate_is_a_skipped_overall_testcase(suite: Suite) -> None:
    suite.experiment(trials=1)
    assert _session(suite) == 1  # pytest's usual: a trial failed
    path = suite.root / "verdict.xml"
    _valid(path)
    assert _cases(path) == {
        "exp run " + next(iter(_run_ids(suite))) + ": gate no gate set": ("skipped", _props(path))
    }


def _run_ids(suite: Suite) -> list[str]:
    return [p.name for p in suite.run_dirs()]


def _props(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    return {p.get("name", ""): p.get("value", "") for p in root.iter("property")}


def test_names_that_xml_cannot_hold_are_replaced() -> None:
    summary = {
        "experiments": [
            {
                "name": "e\x01x",
                "run_id": "r",
                "cells": [
                    {
                        "variant": "v<&>",
                        "task": "t\x1b",
                        "pass_rate": None,
                        "passed": 0,
                        "n": 0,
                        "errors": 2,
                        "gate": {"threshold": 0.5, "met": False, "extra": [1, 2]},
                    }
                ],
                "verdict": {"gated": True, "passed": False, "gated_cells": 1, "failures": [{}]},
            }
        ]
    }
    text = render_verdict(summary)
    root = ET.fromstring(text.encode())
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == [
        "e\ufffdx / v<&> / t\ufffd: pass rate no judged trial < min 50.0%, 2 error(s)",
        "e\ufffdx run r: gate FAILED (1 gated cell(s) below their min pass rate)",
    ]
    assert [len(c.findall("failure")) for c in root.iter("testcase")] == [1, 1]


# --- what CI shows: the real action-junit-report on the files ------------------------------


def test_the_check_follows_the_gate_not_the_trials(suite: Suite) -> None:
    """A gate that passes with failed trials: the trials' JUnit as a check is red (the issue),
    the verdict's is green; the trials as annotations create no check. A failing gate: red."""
    suite.experiment(trials=2, tasks=[dict(t) for t in GOOD_AND_BAD])
    assert _session(suite, "--eval-min-pass-rate=0") == 0  # "bad" 0/2 meets 0: gate passed
    trials = run_action({"report_paths": "trials.xml", "check_name": "evals"}, suite.root)
    [check] = trials.check_runs
    assert check["conclusion"] == "failure"  # what CI showed before: red
    verdict = run_action({"report_paths": "verdict.xml", "check_name": "evals"}, suite.root)
    [check] = verdict.check_runs
    assert (check["name"], check["conclusion"]) == ("evals", "success"), verdict.stdout
    assert verdict.exit_code == 0 and verdict.outputs["failed"] == "0"
    assert verdict.outputs["total"] == "3"  # 2 gated cells and the overall gate
    info = run_action({"report_paths": "trials.xml", "annotate_only": "true"}, suite.root)
    assert info.check_runs == [] and info.exit_code == 0
    assert len(info.error_annotations) == 2  # the 2 failed trials, as information
    # the same suite with a gate it fails: the check is red, and the step fails when asked to
    assert _session(suite, "--eval-min-pass-rate=1.0") == 1
    red = run_action(
        {"report_paths": "verdict.xml", "check_name": "evals", "fail_on_failure": "true"},
        suite.root,
    )
    [check] = red.check_runs
    assert check["conclusion"] == "failure" and red.exit_code == 1
    titles = sorted(a["title"] for a in check["output"]["annotations"])
    assert len(titles) == 2, titles  # the failing cell and the overall gate
    assert red.outputs["failed"] == "2"
