"""metrics.txt read by its real reader: ``promtool check metrics`` (Debian's ``prometheus``
package) accepts it, every name is prefixed ``evalrun_``, and per-cell and per-variant numbers
are separate families, so a PromQL ``sum()`` over one family counts every trial once."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict

import pytest
from conftest import Suite
from test_e2e_reports import FLIP, VERIFY, om, read_openmetrics
from test_summary import E, F, Grid, P, meta, outcomes, summarise

from pytest_evalrun.report.openmetrics import render_openmetrics


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found (Debian: apt-get install prometheus)")
    return path


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def test_metrics_txt_of_a_24_trial_run_passes_promtool_and_sums_right(suite: Suite) -> None:
    """2 variants x 3 tasks x 4 trials under xdist: sum over the cell family is 24, and so is
    the sum over the variant family (0.2.0: one `trials_total` family held both: 48)."""
    tool = promtool()
    suite.experiment(
        "om",
        variants={"base": {}, "other": {}},
        tasks=[
            {"name": name, "prompt": prompt, "fixture": "fixtures/basic", "verify": verify,
             "trials": 4}
            for name, prompt, verify in (
                ("good", "WRITE answer.txt ok", VERIFY),
                ("bad", "WRITE answer.txt no", VERIFY),
                ("flip", "SAY hi", FLIP),
            )
        ],
    )  # fmt: skip
    r = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    r.assert_outcomes(passed=10, failed=14)
    text = (suite.run_dirs("om")[-1] / "metrics.txt").read_text()

    checked = subprocess.run(
        [tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    samples = read_openmetrics(text)
    assert all(name.startswith("evalrun_") for name, _ in samples)
    sums: dict[str, float] = defaultdict(float)
    label_sets: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for (name, labels), value in samples.items():
        sums[name] += value
        label_sets[name].add(tuple(k for k, _ in labels))
    assert sums["evalrun_cell_trials"] == 24
    assert sums["evalrun_variant_trials"] == 24
    assert sums["evalrun_cell_trials_passed"] == sums["evalrun_variant_trials_passed"] == 10
    # one label set per family: no family mixes cells and variant totals
    for name, sets in label_sets.items():
        assert len(sets) == 1, (name, sets)
        assert ("task" in next(iter(sets))) == name.startswith("evalrun_cell_")
    assert samples[om("evalrun_cell_pass_rate", experiment="om", variant="base",
                      task="flip")] == 0.25  # fmt: skip
    assert samples[om("evalrun_variant_pass_rate", experiment="om", variant="other")] == (
        pytest.approx(5 / 12)
    )


def test_openmetrics_exact_text() -> None:
    grid: Grid = {("v", "a"): [P, F], ("v", "b"): [E]}
    s = summarise(outcomes("e", grid), meta("e", variants=["v"], tasks=["a", "b"], trials=2))
    text = render_openmetrics(s)
    lines = text.splitlines()
    assert lines[:4] == [
        "# HELP evalrun_cell_pass_rate Fraction of judged trials (passed, failed, timeout) "
        "that passed, per variant x task.",
        "# TYPE evalrun_cell_pass_rate gauge",
        'evalrun_cell_pass_rate{experiment="e",variant="v",task="a"} 0.5',
        # task b has no judged trial: no pass_rate sample for it
        "# HELP evalrun_cell_trials Trials recorded, including errors, per variant x task.",
    ]
    samples = read_openmetrics(text)
    assert samples == {
        om("evalrun_cell_pass_rate", experiment="e", variant="v", task="a"): 0.5,
        om("evalrun_cell_trials", experiment="e", variant="v", task="a"): 2,
        om("evalrun_cell_trials", experiment="e", variant="v", task="b"): 1,
        om("evalrun_cell_trials_judged", experiment="e", variant="v", task="a"): 2,
        om("evalrun_cell_trials_judged", experiment="e", variant="v", task="b"): 0,
        om("evalrun_cell_trials_passed", experiment="e", variant="v", task="a"): 1,
        om("evalrun_cell_trials_passed", experiment="e", variant="v", task="b"): 0,
        om("evalrun_cell_trials_errors", experiment="e", variant="v", task="a"): 0,
        om("evalrun_cell_trials_errors", experiment="e", variant="v", task="b"): 1,
        om("evalrun_variant_pass_rate", experiment="e", variant="v"): 0.5,
        om("evalrun_variant_trials", experiment="e", variant="v"): 3,
        om("evalrun_variant_trials_judged", experiment="e", variant="v"): 2,
        om("evalrun_variant_trials_passed", experiment="e", variant="v"): 1,
        om("evalrun_variant_trials_errors", experiment="e", variant="v"): 1,
    }
    assert promtool_check(text).returncode == 0


def test_openmetrics_label_escaping() -> None:
    name = 'we\\ird "exp"\nname'
    grid: Grid = {('v"q', "t\\1"): [P]}
    s = summarise(outcomes(name, grid), meta(name, variants=['v"q'], tasks=["t\\1"], trials=1))
    text = render_openmetrics(s)
    # Backslash -> \\, double quote -> \", newline -> \n (raw string: what the file holds).
    expected = (
        r'evalrun_cell_pass_rate{experiment="we\\ird \"exp\"\nname",variant="v\"q",task="t\\1"}'
        " 1.0"
    )
    assert expected in text.splitlines()
    assert text.endswith("# EOF\n")
    assert text.count("# EOF") == 1
    for line in text.splitlines():  # no raw newline inside any sample line
        assert line.startswith(("#", "evalrun_"))
    assert promtool_check(text).returncode == 0


def test_a_summary_with_fields_it_does_not_know_still_renders() -> None:
    """Tolerant of fields added to summary.json later, and of a value that is not a number."""
    grid: Grid = {("v", "a"): [P]}
    s = summarise(outcomes("e", grid), meta("e", variants=["v"], tasks=["a"], trials=1))
    s["experiments"][0]["cells"][0]["new_field"] = {"x": 1}
    s["experiments"][0]["variants"][0]["errors"] = "n/a"
    samples = read_openmetrics(render_openmetrics(s))
    assert om("evalrun_variant_trials_errors", experiment="e", variant="v") not in samples
    assert samples[om("evalrun_cell_trials", experiment="e", variant="v", task="a")] == 1
