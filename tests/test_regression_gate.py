"""--eval-baseline-run / --eval-alpha: the regression gate, end to end (terminal, summary.json,
summary.md, JUnit, exit status), and `evalrun compare` agreeing with it."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import evalrun
from conftest import VERIFY, Suite


def _tasks(answer: str, broken: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    return [
        {
            "name": f"task-{i}",
            "prompt": f"WRITE answer.txt {'nope' if i in broken else answer}",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
        }
        for i in range(6)
    ]


def _run(suite: Suite, *args: str) -> pytest.RunResult:
    return suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", *args)


def _summary(suite: Suite, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (suite.results() / "exp" / run_id / "summary.json").read_text()
    )
    return data


@pytest.fixture(scope="module")
def baseline_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Where the module's baseline run "base" is kept once made (by the first test that needs
    it): each test then starts from its own copy instead of running it again."""
    return {"kept": tmp_path_factory.mktemp("baseline") / "results"}


@pytest.fixture
def baseline(suite: Suite, baseline_results: dict[str, Path]) -> Suite:
    """A results/ holding run "base" of 6 tasks x 3 trials x variants a and b, all passing
    (run once per module, copied for each test without its index, which the next session
    rebuilds)."""
    suite.experiment(trials=3, tasks=_tasks("ok"), variants={"a": {}, "b": {}})
    kept = baseline_results["kept"]
    if not kept.is_dir():
        assert _run(suite, "--eval-run-id=base").ret == 0
        shutil.copytree(suite.results(), kept, symlinks=True,
                        ignore=shutil.ignore_patterns("index.db*"))
    else:
        shutil.copytree(kept, suite.results(), symlinks=True)
    assert [p.name for p in suite.run_dirs()] == ["base"]
    return suite


def test_a_real_drop_fails_the_session(baseline: Suite) -> None:
    suite = baseline
    # variant b's agent now answers wrong on every task; a stays as it was
    suite.experiment(
        trials=3,
        tasks=_tasks("ok"),
        variants={"a": {}, "b": {"agent": {"command": "echo nope > answer.txt"}}},
    )
    result = _run(suite, "--eval-run-id=cand", "--eval-baseline-run=base", "--junitxml=junit.xml")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "regression gate against run base (one-sided test, paired by task (exact stratified "
            "permutation test on these tasks), alpha 0.05, Holm over 2 variants: family-wise "
            "false-alarm rate at most 0.05; errors count as trials that did not pass):",
            "*variant*baseline*this run*difference*p (one-sided)*p (Holm)*tasks paired/dropped*"
            "errors*detectable drop*verdict*",
            "*a*100.0%*100.0%*no regression detected*",
            "*b*100.0%*0.0%*-100.0 pp*REGRESSED*",
            "gate: FAILED (regressed: b)",
        ]
    )
    exp = _summary(suite, "cand")["experiments"][0]
    reg = exp["regression"]
    assert reg["baseline_run"] == "base" and reg["alpha"] == 0.05 and reg["regressed"] == ["b"]
    a, b = reg["variants"]
    assert a["variant"] == "a" and not a["regressed"] and a["diff"] == 0
    assert b["n_tasks"] == 6 and b["regressed"] and b["p_value"] < 0.05
    assert b["diff"] == -1.0 and b["ci_low"] <= b["diff"] < b["ci_high"] < 0
    assert b["min_detectable_drop"] > 0
    assert exp["verdict"] == {
        "gated": True,
        "passed": False,
        "gated_cells": 0,
        "failures": [],
        "unjudged_variants": [],
        "regressions": ["b"],
    }
    md = (suite.results() / "exp" / "cand" / "summary.md").read_text()
    assert "### Regression gate against run `base`" in md and "REGRESSED" in md
    props = {
        p.get("name"): p.get("value") for p in ET.parse(suite.root / "junit.xml").iter("property")
    }
    assert props["evalrun.verdict"] == "failed"
    assert props["evalrun.regression.exp.b.verdict"] == "regressed"
    assert props["evalrun.regression.exp.baseline_run"] == "base"
    # evalrun show says so, and --gate turns it into the exit status (CI on a merged run)
    shown = evalrun("show", "cand", cwd=suite.root)
    assert shown.returncode == 0 and "gate: FAILED (0 of 0 gated cells" in shown.stdout
    assert "regressed: b" in shown.stdout
    assert evalrun("show", "cand", "--gate", cwd=suite.root).returncode == 1
    assert evalrun("show", "base", "--gate", cwd=suite.root).returncode == 0
    # evalrun compare reaches the same verdict with the same numbers
    cmp = evalrun("compare", "base", "cand", "--json", cwd=suite.root)
    assert cmp.returncode == 1, cmp.stderr
    data = json.loads(cmp.stdout)
    data = data[0] if isinstance(data, list) else data
    (vb,) = [v for v in data["variants"] if v["variant"] == "b"]
    assert vb["result"]["p_value"] == pytest.approx(b["p_value"])
    assert vb["result"]["min_detectable_drop"] == pytest.approx(b["min_detectable_drop"])


def test_no_change_passes_and_says_what_it_could_detect(baseline: Suite) -> None:
    suite = baseline
    result = _run(suite, "--eval-run-id=again", "--eval-baseline-run=latest", "--eval-alpha=0.01")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "regression gate against run base (one-sided test, paired by task (exact stratified "
            "permutation test on these tasks), alpha 0.01, Holm over 2 variants: family-wise "
            "false-alarm rate at most 0.01; errors count as trials that did not pass):",
            "*a*100.0%*100.0%*no regression detected*",
            "gate: PASSED (no variant regressed)",
        ]
    )
    reg = _summary(suite, "again")["experiments"][0]["regression"]
    assert reg["passed"] and {v["variant"] for v in reg["variants"]} == {"a", "b"}
    assert all(v["min_detectable_drop"] is not None for v in reg["variants"])


def test_min_pass_rate_gates_still_count(baseline: Suite) -> None:
    suite = baseline
    suite.experiment(
        trials=3, tasks=_tasks("ok", broken=frozenset({0})), variants={"a": {}}, min_pass_rate=0.9
    )
    result = _run(suite, "--eval-run-id=c2", "--eval-baseline-run=base")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "gate: FAILED (1 of 6 gated variant x task pairs below their min pass rate; "
            "no variant regressed)"
        ]
    )


@pytest.mark.parametrize("ref", ["nope", "latest~5"])
def test_an_unknown_baseline_is_a_usage_error(baseline: Suite, ref: str) -> None:
    result = _run(baseline, f"--eval-baseline-run={ref}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--eval-baseline-run {ref}*experiment 'exp'*"])
    assert [p.name for p in baseline.run_dirs()] == ["base"]  # nothing ran


def test_bad_alpha(baseline: Suite) -> None:
    result = _run(baseline, "--eval-baseline-run=base", "--eval-alpha=1.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--eval-alpha*between 0 and 1*"])


def test_the_html_report_shows_the_gate(baseline: Suite, tmp_path: Path) -> None:
    suite = baseline
    assert _run(suite, "--eval-run-id=cand", "--eval-baseline-run=base").ret == 0
    out = tmp_path / "report.html"
    assert evalrun("report", "cand", "-o", str(out), cwd=suite.root).returncode == 0
    page = out.read_text()
    assert "Regression gate against run base" in page
    assert page.count("no regression detected") >= 2


def test_a_new_experiment_without_a_baseline_is_a_usage_error(suite: Suite) -> None:
    suite.experiment(trials=2, tasks=_tasks("ok"), variants={"a": {}})
    result = _run(suite, "--eval-baseline-run=latest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(
        ["ERROR: --eval-baseline-run latest: experiment 'exp' has no earlier run in *results"]
    )
    assert suite.run_dirs() == []  # no trial ran


def test_with_baseline_optional_a_new_experiment_runs_ungated_and_says_so(suite: Suite) -> None:
    suite.experiment(trials=2, tasks=_tasks("ok"), variants={"a": {}})
    result = _run(suite, "--eval-baseline-run=latest", "--eval-baseline-optional")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "note: regression gate: --eval-baseline-run latest: experiment 'exp' has no earlier "
            "run in *results; --eval-baseline-optional: this run is not gated on regression*"
        ]
    )
    (run,) = suite.run_dirs()
    exp = json.loads((run / "summary.json").read_text())["experiments"][0]
    assert "regression" not in exp
    assert any("not gated on regression" in n for n in exp["notes"])
    assert "not gated on regression" in (run / "summary.md").read_text()


def test_errors_never_hide_a_regression(suite: Suite) -> None:
    """The issue's case 1: an update breaks 2 of 6 tasks so that their trials end as errors
    (here: setup fails on them). 0.2.0 reported 100.0% 12/12, +0.0 pp, gate PASSED. Errors now
    count as trials that did not pass, and tasks judged in the baseline with no judged trial
    now fail the variant."""
    tasks = _tasks("ok")
    suite.experiment(trials=2, tasks=tasks, variants={"a": {}})
    assert _run(suite, "--eval-run-id=base").ret == 0
    for t in tasks[4:]:
        t["env"] = {"BREAK": "1"}
    suite.experiment(trials=2, tasks=tasks, variants={"a": {"setup": 'test -z "$BREAK"'}})
    result = _run(suite, "--eval-run-id=cand", "--eval-baseline-run=base")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*a*100.0%*66.7%*-33.3 pp*6/2*4*FAILED: 2 task(s) without a judged trial*",
            "gate: FAILED (regressed: a)",
        ]
    )
    reg = _summary(suite, "cand")["experiments"][0]["regression"]
    (a,) = reg["variants"]
    assert a["tasks_dropped"] == ["task-4", "task-5"] and a["errors"] == 4
    assert a["tasks_paired"] == 6 and a["cand_rate"] == pytest.approx(2 / 3)
    assert reg["errors"] == "count" and reg["regressed"] == ["a"]
    # evalrun compare, the same computation: the same verdict
    cmp = evalrun("compare", "base", "cand", cwd=suite.root)
    assert cmp.returncode == 1, cmp.stdout
    assert "2 task(s) judged in the baseline have no judged trial now)" in cmp.stdout
    assert "+2E" in cmp.stdout
    excluded = evalrun("compare", "base", "cand", "--errors", "exclude", cwd=suite.root)
    assert excluded.returncode == 0, excluded.stdout
    assert "errors excluded" in excluded.stdout


def test_within_run_comparison_and_the_gate_agree_on_the_same_counts(suite: Suite) -> None:
    """The issue's case: with per-task `trials:`, the terminal's within-run comparison (paired t
    over task means, +76.9 pp) and the gate / evalrun compare (weighted by trials, -34.7 pp,
    REGRESSED) disagreed in sign on the same counts. Here run `cand` has variant `old` (the
    baseline run's behaviour) and `new`; `new` against `old` within the run and `new` against
    the baseline run are the same counts, and every report gives the same answer."""
    good = 'if [ -n "$BIG" ]; then echo ok; else echo nope; fi > answer.txt'
    bad = 'if [ -n "$BIG" ]; then echo nope; else echo ok; fi > answer.txt'
    tasks = [
        {"name": "big", "prompt": "p", "fixture": "fixtures/basic", "verify": VERIFY,
         "trials": 12, "env": {"BIG": "1"}},
        *({"name": f"small-{i}", "prompt": "p", "fixture": "fixtures/basic", "verify": VERIFY,
           "trials": 1} for i in range(3)),
    ]  # fmt: skip
    suite.experiment(tasks=tasks, variants={"new": {"agent": {"command": good}}})
    assert _run(suite, "--eval-run-id=base").ret == 1  # no gate: its failed trials fail pytest
    suite.experiment(
        tasks=tasks,
        variants={"old": {"agent": {"command": good}}, "new": {"agent": {"command": bad}}},
    )
    result = _run(suite, "--eval-run-id=cand", "--eval-baseline-run=base")
    out = result.stdout.str()
    exp = _summary(suite, "cand")["experiments"][0]
    (within,) = exp["comparisons"]
    (gate,) = [v for v in exp["regression"]["variants"] if v["variant"] == "new"]
    # the paired t-test over task means would say +50 pp (3 tasks up, 1 down); weighted by
    # trials the drop on the big task dominates
    assert within["diff"] == pytest.approx(gate["diff"]) and gate["diff"] < 0
    assert within["p_worse"] == pytest.approx(gate["p_value"])
    assert gate["regressed"] is True and result.ret == 1
    line = next(x for x in out.splitlines() if x.startswith("new vs old:"))
    assert line.startswith(f"new vs old: {gate['diff'] * 100:+.1f} pp")
    cmp = evalrun("compare", "base", "cand", "--json", cwd=suite.root)
    data = json.loads(cmp.stdout)
    data = data[0] if isinstance(data, list) else data
    (vn,) = [v for v in data["variants"] if v["variant"] == "new"]
    assert vn["result"]["diff"] == pytest.approx(gate["diff"])
    assert vn["result"]["p_value"] == pytest.approx(gate["p_value"]) and cmp.returncode == 1
