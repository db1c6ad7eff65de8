"""End to end: the reports a CI pipeline reads (JUnit XML, summary.json/md, OpenMetrics, the
terminal summary) and the gate verdict that sets the exit status, from real pytest sessions."""

from __future__ import annotations

import functools
import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import VERIFY, Suite
from junit_xsd import load_junit_schema

#: Passes on trial 1, fails on every other trial: a 50% task with 2 trials.
FLIP = 'test "$EVALRUN_TRIAL" -eq 1'
#: A verify program missing from the experiment: the trial errors (verify_missing), unjudged.
#: (A reward verify cannot parse is a judged failure: tests/test_trial_verdicts.py.)
GARBAGE = ["no-such-verifier-xyz"]
MISSING_AGENT = {"agent": {"command": ["no-such-agent-xyz"]}}

#: The agent of test_e2e_runs.py: SIGKILLs its worker the first time it runs, then behaves.
CRASH_ONCE = (
    "import os, signal, pathlib, time\n"
    "flag = pathlib.Path(os.environ['EVALRUN_EXPERIMENT_DIR'], 'shared', 'crashed-once')\n"
    "if not flag.exists():\n"
    "    flag.write_text('x')\n"
    "    os.kill(os.getppid(), signal.SIGKILL)\n"
    "    time.sleep(60)\n"
    "pathlib.Path('answer.txt').write_text('ok')\n"
)


# --------------------------------------------------------------------------------------------
# helpers


@functools.cache
def _schema() -> Any:
    return load_junit_schema()


def assert_valid_junit(path: Path) -> None:
    """``path`` validates against pytest's junit-10.xsd (fails the test if it cannot be had)."""
    schema = _schema()
    errors = [str(e).splitlines()[0] for e in schema.iter_errors(str(path))]
    assert not errors, f"{path.name} is not valid against junit-10.xsd:\n" + "\n".join(errors)


def read_junit(path: Path) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(suite properties, [(classname, name, kind)]) with kind passed/failure/error/skipped."""
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 1
    ts = suites[0]
    props: dict[str, str] = {}
    for prop in ts.findall("properties/property"):
        assert prop.get("name") not in props, f"duplicate property {prop.get('name')}"
        props[prop.attrib["name"]] = prop.attrib["value"]
    cases: list[tuple[str, str, str]] = []
    for case in ts.iter("testcase"):
        assert case.find("properties") is None, "xunit2 allows no <properties> in <testcase>"
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        assert len(kinds) <= 1, (case.attrib, kinds)
        kind = kinds[0] if kinds else "passed"
        cases.append((case.attrib["classname"], case.attrib["name"], kind))
    names = [(c, n) for c, n, _ in cases]
    assert len(names) == len(set(names)), f"testcase names are not unique: {sorted(names)}"
    # xunit-viewer's console mode and Ant's junitreport show the name without the classname
    alone = [n for _, n, _ in trial_cases(cases)]
    assert len(alone) == len(set(alone)), f"trial names are not unique alone: {sorted(alone)}"
    return props, cases


def case_name(experiment: str, variant: str, task: str, trial: int) -> str:
    """The testcase name of a trial (the names as written, not slugs)."""
    return f"{experiment} / {variant} / {task} / trial {trial}"


def trial_cases(cases: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [c for c in cases if " / trial " in c[1]]


def run(suite: Suite, *args: str, xdist: bool = False) -> pytest.RunResult:
    if xdist:
        return suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", *args)
    return suite.pytester.runpytest("-p", "no:cacheprovider", *args)


def summary_json(suite: Suite, experiment: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((suite.run_dirs(experiment)[-1] / "summary.json").read_text())
    return data


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """An independent Wilson score interval (95%)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


_OM_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$")
_OM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def read_openmetrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    lines = text.splitlines()
    assert lines[-1] == "# EOF" and text.endswith("\n")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        m = _OM_LINE.match(line)
        assert m, f"not an OpenMetrics sample: {line!r}"
        labels = tuple(sorted(_OM_LABEL.findall(m.group(2))))
        key = (m.group(1), labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group(3))
    return samples


def om(family: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return family, tuple(sorted(labels.items()))


# --------------------------------------------------------------------------------------------
# JUnit XML, the summaries and the terminal: one experiment with passes, failures and errors

#: Experiment and variant names with dots (CI tools split classnames on dots).
EXP = "rel.v1"


def mixed_experiment(suite: Suite, **top: Any) -> None:
    """base and gpt-4.1: good 2/2, flip.v2 1/2, garbage 1 error; no-agent: 5 errors."""
    suite.experiment(
        EXP,
        variants={"base": {}, "gpt-4.1": {"model": "gpt-4.1"}, "no-agent": MISSING_AGENT},
        tasks=[
            {"name": "good", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
             "verify": VERIFY, "trials": 2},
            {"name": "flip.v2", "prompt": "SAY hi", "fixture": "fixtures/basic",
             "verify": FLIP, "trials": 2},
            {"name": "garbage", "prompt": "SAY hi", "fixture": "fixtures/basic",
             "verify": GARBAGE, "trials": 1},
        ],
        **top,
    )


def mixed_expected_cases() -> set[tuple[str, str, str]]:
    cases = set()
    for variant, part in (("base", "base"), ("gpt-4.1", "gpt-4_1")):
        cases |= {
            (f"rel_v1.{part}.good", case_name(EXP, variant, "good", 1), "passed"),
            (f"rel_v1.{part}.good", case_name(EXP, variant, "good", 2), "passed"),
            (f"rel_v1.{part}.flip_v2", case_name(EXP, variant, "flip.v2", 1), "passed"),
            (f"rel_v1.{part}.flip_v2", case_name(EXP, variant, "flip.v2", 2), "failure"),
            (f"rel_v1.{part}.garbage", case_name(EXP, variant, "garbage", 1), "error"),
        }
    cases |= {
        ("rel_v1.no-agent.good", case_name(EXP, "no-agent", "good", 1), "error"),
        ("rel_v1.no-agent.good", case_name(EXP, "no-agent", "good", 2), "error"),
        ("rel_v1.no-agent.flip_v2", case_name(EXP, "no-agent", "flip.v2", 1), "error"),
        ("rel_v1.no-agent.flip_v2", case_name(EXP, "no-agent", "flip.v2", 2), "error"),
        ("rel_v1.no-agent.garbage", case_name(EXP, "no-agent", "garbage", 1), "error"),
    }
    return cases


def assert_pass_rate_properties(props: dict[str, str], summary: dict[str, Any]) -> None:
    """Every variant and variant x task pass rate of summary.json is a suite property."""
    seen = 0
    for exp in summary["experiments"]:
        name = exp["name"]
        for v in exp["variants"]:
            value = props[f"evalrun.pass_rate.{name}.{v['name']}"]
            assert _same_rate(value, v["pass_rate"]), (v["name"], value, v["pass_rate"])
            seen += 1
        for c in exp["cells"]:
            value = props[f"evalrun.pass_rate.{name}.{c['variant']}.{c['task']}"]
            assert _same_rate(value, c["pass_rate"]), (c["variant"], c["task"], value)
            seen += 1
    assert seen == sum(1 for p in props if p.startswith("evalrun.pass_rate."))


def _same_rate(text: str, rate: float | None) -> bool:
    if rate is None:
        return text == ""
    return abs(float(text) - rate) < 5e-5


def test_serial_junit_summaries_and_terminal(suite: Suite) -> None:
    mixed_experiment(suite)
    r = run(suite, "--junitxml=out/junit.xml", "--eval-run-id=r1",
            "--eval-summary-md=out/all.md", "--eval-openmetrics=out/metrics.txt")
    r.assert_outcomes(passed=6, failed=2, errors=7)
    assert r.ret == 1  # no gate: pytest's usual exit status

    junit = suite.root / "out" / "junit.xml"
    assert_valid_junit(junit)
    props, cases = read_junit(junit)
    assert set(cases) == mixed_expected_cases() and len(cases) == 15
    assert not any(re.search(r"\d+(\.\d+)?%|0\.\d", n) for _, n, _ in cases)  # no rate in names
    summary = summary_json(suite, EXP)
    assert summary["verdict"] == {"gated": False, "passed": None, "gated_cells": 0,
                                  "failures": [], "unjudged_variants": []}
    assert props["evalrun.verdict"] == "ungated"
    assert props[f"evalrun.verdict.{EXP}"] == "ungated"
    assert props[f"evalrun.run_id.{EXP}"] == "r1"
    assert_pass_rate_properties(props, summary)
    assert props[f"evalrun.pass_rate.{EXP}.base.flip.v2"] == "0.5000"
    assert props[f"evalrun.pass_rate.{EXP}.gpt-4.1"] == "0.7500"  # 3/4: errors apart
    assert props[f"evalrun.pass_rate.{EXP}.no-agent"] == ""

    # summary.json: the numbers
    exp = summary["experiments"][0]
    assert exp["totals"] == {"trials": 15, "judged": 8, "passed": 6, "failed": 2, "timeout": 0,
                             "errors": 7, "resumed": 0, "retried": 0,
                             "rerun_judged": 0, "not_run": 0}
    base = next(v for v in exp["variants"] if v["name"] == "base")
    assert (base["passed"], base["n"], base["errors"]) == (3, 4, 1)
    assert base["wilson"] == pytest.approx(wilson(3, 4), abs=1e-9)
    assert base["error_kinds"] == {"verify_missing": 1}
    no_agent = next(v for v in exp["variants"] if v["name"] == "no-agent")
    assert no_agent["pass_rate"] is None and no_agent["errors"] == 5

    # OpenMetrics: the file asked for, and the run's own metrics.txt
    run_dir = suite.results() / EXP / "r1"
    text = (suite.root / "out" / "metrics.txt").read_text()
    assert text == (run_dir / "metrics.txt").read_text()
    samples = read_openmetrics(text)
    cell_rate, cell_errors = "evalrun_cell_pass_rate", "evalrun_cell_trials_errors"
    for v in ("base", "gpt-4.1"):
        assert samples[om(cell_rate, experiment=EXP, variant=v, task="good")] == 1.0
        assert samples[om(cell_rate, experiment=EXP, variant=v, task="flip.v2")] == 0.5
        assert samples[om("evalrun_variant_pass_rate", experiment=EXP, variant=v)] == 0.75
        assert om(cell_rate, experiment=EXP, variant=v, task="garbage") not in samples
        assert samples[om(cell_errors, experiment=EXP, variant=v, task="garbage")] == 1
        assert samples[om("evalrun_variant_trials_judged", experiment=EXP, variant=v)] == 4
        assert samples[om("evalrun_variant_trials", experiment=EXP, variant=v)] == 5
    assert samples[om("evalrun_variant_trials_errors", experiment=EXP, variant="no-agent")] == 5
    rates = [k for k in samples if k[0].endswith("pass_rate")]
    assert not [k for k in rates if ("variant", "no-agent") in k[1]]
    assert len([k for k in samples if k[0].endswith("pass_rate")]) == 6

    # summary.md: the run's own and the one asked for
    md = (suite.root / "out" / "all.md").read_text()
    assert md == (run_dir / "summary.md").read_text()
    assert "## Experiment `rel.v1`" in md
    assert "15 trials: 6 passed, 2 failed, 0 timed out, 7 errors" in md
    assert "| task | base | gpt-4.1 | no-agent |" in md
    assert "| good | 2/2 (100%) | 2/2 (100%) | - · 2 errors |" in md
    assert "| flip.v2 | 1/2 (50%) ⚠️ | 1/2 (50%) ⚠️ | - · 2 errors |" in md
    assert "| garbage | - · 1 error | - · 1 error | - · 1 error |" in md
    assert "Gate: none set." in md

    # the terminal: variant x task table, variant pass rates with their interval, errors
    # apart, and where the results are
    lo, hi = wilson(3, 4)
    ci = rf"\[{lo * 100:.1f}, {hi * 100:.1f}\]%"
    r.stdout.re_match_lines([
        r"=+ evalrun =+",
        r"experiment rel\.v1 \(run r1\): 15 trials: 6 passed, 2 failed, 0 timed out, 7 errors",
        r"task\s+base\s+gpt-4\.1\s+no-agent$",
        r"good\s+2/2\s+2/2\s+- \+2E$",
        r"flip\.v2\s+1/2 ~\s+1/2 ~\s+- \+2E$",
        r"garbage\s+- \+1E\s+- \+1E\s+- \+1E$",
        r"variant\s+pass rate\s+95% CI these tasks\s+95% CI tasks like these\s+k/n\s+"
        r"timeouts\s+errors\b.*",
        rf"base\s+75\.0%\s+{ci}\s+\[[0-9.]+, [0-9.]+\]%\s+3/4\s+0\s+1\b.*",
        rf"gpt-4\.1\s+75\.0%\s+{ci}\s+\[[0-9.]+, [0-9.]+\]%\s+3/4\s+0\s+1\b.*",
        r"no-agent\s+-\s+-\s+-\s+0/0\s+0\s+5\b.*",
    ], consecutive=False)
    # where the results are: relative to the directory pytest ran in (no absolute path)
    rel = run_dir.relative_to(suite.root)
    r.stdout.fnmatch_lines([f"results: {rel}; jobs: jobs"])
    assert "gate:" not in r.stdout.str()


def test_xdist_junit_is_valid_with_the_same_testcases_and_a_failed_gate(suite: Suite) -> None:
    mixed_experiment(suite)
    r = run(suite, "--junitxml=junit.xml", "--eval-min-pass-rate=0.5", "--eval-run-id=x1",
            xdist=True)
    r.assert_outcomes(passed=6, failed=2, errors=7)
    junit = suite.root / "junit.xml"
    assert_valid_junit(junit)
    props, cases = read_junit(junit)
    assert set(cases) == mixed_expected_cases() and len(cases) == 15
    summary = summary_json(suite, EXP)
    assert_pass_rate_properties(props, summary)
    # every gated cell of base and gpt-4.1 meets 50% except garbage (only an error); no-agent
    # has only errors: those cells fail their gate
    verdict = summary["verdict"]
    assert verdict["gated"] is True and verdict["passed"] is False
    assert verdict["gated_cells"] == 9
    assert sorted((f["variant"], f["task"]) for f in verdict["failures"]) == sorted(
        [("base", "garbage"), ("gpt-4.1", "garbage"), ("no-agent", "good"),
         ("no-agent", "flip.v2"), ("no-agent", "garbage")])
    assert props["evalrun.verdict"] == "failed" == props[f"evalrun.verdict.{EXP}"]
    r.stdout.fnmatch_lines([
        "gate: FAILED (5 of 9 gated variant x task pairs below their min pass rate)",
        "  base / garbage: no judged trial < 50.0%",
    ])
    assert r.ret == 1


def test_crashed_worker_is_an_error_testcase_and_resumed_trials_are_reported(
    suite: Suite,
) -> None:
    suite.write("crash_once.py", CRASH_ONCE)
    # unsandboxed: a sandboxed agent cannot reach (and kill) its worker
    crashy = {
        "agent": {"command": [sys.executable, str(suite.root / "crash_once.py")]},
        "sandbox": "none",
    }
    suite.experiment(
        variants={"base": {}, "crashy": crashy},
        tasks=[{"name": "t", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
                "verify": VERIFY, "trials": 3}],
    )
    # A gate of 1.0: the errored trial counts as a trial that did not pass, so crashy/t fails
    # its gate (errors never help a gate); its pass rate leaves the error out.
    r = run(suite, "--junitxml=first.xml", "--eval-min-pass-rate=1", xdist=True)
    assert r.parseoutcomes().get("passed") == 5, r.stdout.str()
    first = suite.root / "first.xml"
    assert_valid_junit(first)
    props, cases = read_junit(first)
    crashed = [n for n in (1, 2, 3) if suite.meta("crashy", "t", n)["status"] == "error"]
    assert len(crashed) == 1
    expected = {(f"exp.{v}.t", case_name("exp", v, "t", n), "passed")
                for v in ("base", "crashy") for n in (1, 2, 3)}
    crashed_name = case_name("exp", "crashy", "t", crashed[0])
    expected -= {("exp.crashy.t", crashed_name, "passed")}
    expected |= {("exp.crashy.t", crashed_name, "error")}
    assert set(cases) == expected
    error = ET.parse(first).getroot().find(
        f".//testcase[@name='{crashed_name}'][@classname='exp.crashy.t']/error")
    assert error is not None and "crashed" in (error.get("message") or "")
    summary = summary_json(suite, "exp")
    assert summary["verdict"]["passed"] is False
    assert [(f["variant"], f["gate_passed"], f["gate_trials"])
            for f in summary["verdict"]["failures"]] == [("crashy", 2, 3)]
    assert summary["experiments"][0]["totals"]["errors"] == 1
    assert props["evalrun.verdict"] == "failed"
    assert_pass_rate_properties(props, summary)
    r.stdout.fnmatch_lines(["gate: FAILED (1 of 2 gated variant x task pairs below their min "
                            "pass rate)", "  crashy / t: 2/3 passed, upper bound *"])
    assert r.ret == 1

    # resume the finished run: the judged trials are reused, the crashed one runs again
    r = run(suite, "--junitxml=second.xml", "--eval-resume")
    r.assert_outcomes(passed=6)
    assert r.ret == 0
    second = suite.root / "second.xml"
    assert_valid_junit(second)
    props, cases = read_junit(second)
    assert set(cases) == {(c, n, "passed") for c, n, _ in expected}
    summary = summary_json(suite, "exp")
    assert summary["experiments"][0]["totals"]["resumed"] == 5
    assert summary["experiments"][0]["totals"]["passed"] == 6
    assert props["evalrun.pass_rate.exp.crashy.t"] == "1.0000"
    assert_pass_rate_properties(props, summary)


def test_failures_and_timeouts_are_failures_in_junit_also_when_resumed(suite: Suite) -> None:
    suite.experiment(tasks=[
        {"name": "good", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
         "verify": VERIFY},
        {"name": "bad", "prompt": "WRITE answer.txt nope", "fixture": "fixtures/basic",
         "verify": VERIFY},
        {"name": "slow", "prompt": "SLEEP 30", "fixture": "fixtures/basic", "verify": VERIFY,
         "timeout": 0.5},
    ])
    r = run(suite, "--junitxml=a.xml", "--eval-run-id=r1")
    assert r.ret == 1
    assert suite.meta("base", "slow")["status"] == "timeout"
    r = run(suite, "--junitxml=b.xml", "--eval-resume", "--eval-min-pass-rate=1")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*gate: FAILED*", "  base / bad: 0/1 passed, upper bound * < 100.0%",
                            "  base / slow: 0/1 passed, upper bound * < 100.0%"])
    assert_valid_junit(suite.root / "a.xml")
    assert_valid_junit(suite.root / "b.xml")
    props, b = read_junit(suite.root / "b.xml")
    assert read_junit(suite.root / "a.xml")[1] == b == [
        ("exp.base.good", "exp / base / good / trial 1", "passed"),
        ("exp.base.bad", "exp / base / bad / trial 1", "failure"),
        ("exp.base.slow", "exp / base / slow / trial 1", "failure"),
    ]
    summary = summary_json(suite, "exp")
    assert summary["experiments"][0]["totals"]["resumed"] == 3
    assert summary["experiments"][0]["totals"]["timeout"] == 1
    assert summary["verdict"]["passed"] is False
    assert props["evalrun.verdict"] == "failed"
    assert props["evalrun.pass_rate.exp.base"] == "0.3333"


# --------------------------------------------------------------------------------------------
# gates


def gate_experiment(suite: Suite, *, top: float | None = None, flip: float | None = None,
                    no_agent: bool = False, name: str = "exp") -> None:
    """good 1/1 and flip 1/2 (a failed trial), with optional experiment and task gates."""
    flip_task: dict[str, Any] = {"name": "flip", "prompt": "SAY hi", "fixture": "fixtures/basic",
                                 "verify": FLIP, "trials": 2}
    if flip is not None:
        flip_task["min_pass_rate"] = flip
    extra: dict[str, Any] = {} if top is None else {"min_pass_rate": top}
    variants: dict[str, Any] = {"base": {}}
    if no_agent:
        variants["no-agent"] = MISSING_AGENT
    suite.experiment(
        name,
        variants=variants,
        tasks=[{"name": "good", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
                "verify": VERIFY}, flip_task],
        **extra,
    )


GATE_CASES = {
    # id: (experiment gate, flip task gate, CLI gate, missing-agent variant, exit status,
    #      flip's threshold and its source)
    "experiment-met": (0.5, None, None, False, 0, (0.5, "experiment")),
    # a cell fails when its upper bound lies below the minimum: 1/2 cannot fail 0.6, it fails 1.0
    "experiment-unmet": (1.0, None, None, False, 1, (1.0, "experiment")),
    "task-lowers-experiment": (0.9, 0.5, None, False, 0, (0.5, "task")),
    "task-raises-experiment": (0.1, 1.0, None, False, 1, (1.0, "task")),
    "cli-met": (None, None, 0.5, False, 0, (0.5, "cli")),
    "cli-unmet": (None, None, 1.0, False, 1, (1.0, "cli")),
    "cli-stricter-than-file": (0.5, None, 1.0, False, 1, (1.0, "cli")),
    "file-stricter-than-cli": (None, 1.0, 0.5, False, 1, (1.0, "task")),
    "only-errors-fail-a-zero-gate": (None, None, 0.0, True, 1, (0.0, "cli")),
    "no-gate": (None, None, None, False, 1, (None, None)),
}


@pytest.mark.parametrize(("top", "flip", "cli", "no_agent", "status", "threshold"),
                         list(GATE_CASES.values()), ids=list(GATE_CASES))
def test_gate_sets_the_exit_status_and_every_report_agrees(
    suite: Suite, top: float | None, flip: float | None, cli: float | None, no_agent: bool,
    status: int, threshold: tuple[float | None, str | None],
) -> None:
    gate_experiment(suite, top=top, flip=flip, no_agent=no_agent)
    args = ["--junitxml=junit.xml"] + ([] if cli is None else [f"--eval-min-pass-rate={cli}"])
    r = run(suite, *args)
    outcomes = r.parseoutcomes()
    assert outcomes.get("passed") == 2 and outcomes.get("failed") == 1, outcomes
    assert r.ret == status, r.stdout.str()

    summary = summary_json(suite, "exp")
    verdict = summary["verdict"]
    cell = next(c for c in summary["experiments"][0]["cells"]
                if (c["variant"], c["task"]) == ("base", "flip"))
    assert cell["gate"]["threshold"] == threshold[0]
    if threshold[1] != "experiment":  # see test_gate_source_of_an_experiment_level_gate
        assert cell["gate"]["source"] == threshold[1]
    junit = suite.root / "junit.xml"
    assert_valid_junit(junit)
    props, _ = read_junit(junit)
    out = r.stdout.str()
    if threshold[0] is None:
        assert verdict["gated"] is False and verdict["passed"] is None
        assert props["evalrun.verdict"] == "ungated"
        assert "gate:" not in out
        return
    assert verdict["gated"] is True
    assert verdict["passed"] is (status == 0)
    word = "passed" if status == 0 else "failed"
    assert props["evalrun.verdict"] == word == props["evalrun.verdict.exp"]
    assert f"gate: {word.upper()} (" in out
    failed = {(f["variant"], f["task"]) for f in verdict["failures"]}
    for f in verdict["failures"]:
        assert f"  {f['variant']} / {f['task']}: " in out
    if no_agent:
        assert failed == {("no-agent", "good"), ("no-agent", "flip")}
        assert "  no-agent / good: no judged trial < 0.0%" in out


def test_gate_source_of_an_experiment_level_gate(suite: Suite) -> None:
    gate_experiment(suite, top=0.5, flip=0.25)
    run(suite)
    exp = summary_json(suite, "exp")["experiments"][0]
    sources = {c["task"]: (c["gate"]["threshold"], c["gate"]["source"]) for c in exp["cells"]}
    assert sources == {"good": (0.5, "experiment"), "flip": (0.25, "task")}
    rows = {t["name"]: (t["min_pass_rate"], t["gate_source"]) for t in exp["tasks"]}
    assert rows == sources


def test_gate_passes_under_xdist_with_failed_trials(suite: Suite) -> None:
    gate_experiment(suite, top=0.5)
    r = run(suite, xdist=True)
    r.assert_outcomes(passed=2, failed=1)
    assert r.ret == 0
    r.stdout.fnmatch_lines(["gate: PASSED (all 2 gated variant x task pairs meet their min "
                            "pass rate)"])


def test_no_gate_and_all_passed_exits_0(suite: Suite) -> None:
    gate_experiment(suite)
    r = run(suite, "-k", "good")
    r.assert_outcomes(passed=1, deselected=2)
    assert r.ret == 0


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_bad_experiment_file_fails_the_session_even_when_gates_pass(
    suite: Suite, xdist: bool
) -> None:
    gate_experiment(suite, top=0.5)
    suite.write("broken.eval.yaml", "variants:\n  a:\n    agent: {command: [x]}\ntasks:\n"
                "  - name: t\n    promt: hi\n    verify: x\n")
    r = run(suite, "--junitxml=junit.xml", xdist=xdist)
    r.assert_outcomes(passed=2, failed=1, errors=1)
    assert r.ret == 1
    r.stdout.fnmatch_lines(["gate: PASSED*", "*experiment file error*broken.eval.yaml*"])
    assert summary_json(suite, "exp")["verdict"]["passed"] is True
    junit = suite.root / "junit.xml"
    assert_valid_junit(junit)
    props, cases = read_junit(junit)
    assert props["evalrun.verdict"] == "passed"
    assert len(trial_cases(cases)) == 3
    others = [c for c in cases if c not in trial_cases(cases)]
    assert len(others) == 1 and others[0][2] == "error", others


@pytest.mark.parametrize("python_test", ["fails", "passes"])
def test_an_ordinary_test_still_counts_with_gates_met(suite: Suite, python_test: str) -> None:
    gate_experiment(suite, top=0.5)
    body = "assert False" if python_test == "fails" else "assert True"
    suite.write("test_plain.py", f"def test_plain():\n    {body}\n")
    r = run(suite, "--junitxml=junit.xml")
    r.stdout.fnmatch_lines(["gate: PASSED*"])
    assert r.ret == (1 if python_test == "fails" else 0)
    junit = suite.root / "junit.xml"
    assert_valid_junit(junit)
    _, cases = read_junit(junit)
    # the ordinary test keeps pytest's own names
    kind = "failure" if python_test == "fails" else "passed"
    assert ("test_plain", "test_plain", kind) in cases
    assert len(trial_cases(cases)) == 3


# --------------------------------------------------------------------------------------------
# several experiments in one session


def test_two_experiments_combined_reports(suite: Suite) -> None:
    gate_experiment(suite, name="alpha", top=0.5)
    gate_experiment(suite, name="beta.x", flip=1.0)
    r = run(suite, "--junitxml=junit.xml", "--eval-summary-md=all.md",
            "--eval-openmetrics=all.txt", "--junit-prefix=nightly")
    assert r.ret == 1
    summary_a = summary_json(suite, "alpha")
    summary_b = summary_json(suite, "beta.x")
    assert summary_a["verdict"]["passed"] is True
    assert summary_b["verdict"]["passed"] is False
    r.stdout.fnmatch_lines([
        "experiment alpha *", "gate: PASSED*", "experiment beta.x *", "gate: FAILED*",
        "  base / flip: 1/2 passed, upper bound * < 100.0%",
        "evalrun gates: FAILED (1 of 3 gated variant x task "
        "pairs below their min pass rate)"])
    junit = suite.root / "junit.xml"
    assert_valid_junit(junit)
    props, cases = read_junit(junit)
    assert props["evalrun.verdict"] == "failed"
    assert props["evalrun.verdict.alpha"] == "passed"
    assert props["evalrun.verdict.beta.x"] == "failed"
    for s in (summary_a, summary_b):
        assert_pass_rate_properties(
            {k: v for k, v in props.items()
             if k.startswith(f"evalrun.pass_rate.{s['experiments'][0]['name']}.")}, s)
    assert {c for c, _, _ in cases} == {"nightly.alpha.base.good", "nightly.alpha.base.flip",
                                        "nightly.beta_x.base.good", "nightly.beta_x.base.flip"}
    # the same variant and task names in both experiments: the names alone still differ
    assert sorted(n for _, n, _ in trial_cases(cases)) == sorted(
        case_name(e, "base", t, n)
        for e in ("alpha", "beta.x")
        for t, k in (("good", 1), ("flip", 2))
        for n in range(1, k + 1)
    )
    samples = read_openmetrics((suite.root / "all.txt").read_text())
    cell_rate, variant_rate = "evalrun_cell_pass_rate", "evalrun_variant_pass_rate"
    assert samples[om(cell_rate, experiment="alpha", variant="base", task="flip")] == 0.5
    assert samples[om(cell_rate, experiment="beta.x", variant="base", task="good")] == 1.0
    assert samples[om(variant_rate, experiment="beta.x", variant="base")] == pytest.approx(2 / 3)
    md = (suite.root / "all.md").read_text()
    assert md.startswith("# Evaluation results\n\n❌ Gates failed.")
    assert "## Experiment `alpha`" in md and "## Experiment `beta.x`" in md
    assert "✅ **Gate passed**" in md and "❌ **Gate failed**: 1 of 1" in md


# --------------------------------------------------------------------------------------------
# the schema helper: a schema that cannot be had fails the test, never skips it


def test_schema_from_env_var_and_failure_when_it_cannot_be_had(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import junit_xsd

    good = junit_xsd.junit_xsd_path()
    monkeypatch.setenv(junit_xsd.ENV_VAR, str(good))
    assert junit_xsd.junit_xsd_path() == good
    assert junit_xsd.load_junit_schema() is not None

    monkeypatch.setenv(junit_xsd.ENV_VAR, str(tmp_path / "missing.xsd"))
    with pytest.raises(pytest.fail.Exception, match="EVALRUN_JUNIT_XSD is set to"):
        junit_xsd.load_junit_schema()

    # no env var and no cache: a failure that says how to get the schema, and no download
    monkeypatch.delenv(junit_xsd.ENV_VAR)
    monkeypatch.setattr(junit_xsd, "_HOME", tmp_path)
    monkeypatch.setattr(junit_xsd, "_download", lambda version: pytest.fail("downloaded"))
    with pytest.raises(pytest.fail.Exception, match=r"Run `python tests/junit_xsd.py` once"):
        junit_xsd.load_junit_schema()
    assert not junit_xsd.cache_path().exists()
    # a cache file that is not the schema is not used either
    junit_xsd.cache_path().parent.mkdir(parents=True)
    junit_xsd.cache_path().write_text("<html>not found</html>")
    with pytest.raises(junit_xsd.XsdUnavailable, match="is not the schema"):
        junit_xsd.junit_xsd_path()
