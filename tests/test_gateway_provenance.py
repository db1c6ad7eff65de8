"""Where tokens and cost came from, in every output (issue 20): a plain ``command:`` agent's own
metrics.json is ``self_reported`` whatever it claims (even a gateway's shape), a negative or
absurd value is refused with a note, and the terminal, summary.json/md, the CSV export and the
index say the source. Presets' ``gateway`` figures are checked with the real CLIs in
test_gateway_clis.py."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from cli_helpers import evalrun
from conftest import Suite

from pytest_evalrun.experiment.errors import ExperimentError, ExperimentErrors
from pytest_evalrun.experiment.load import load_experiment_text

#: A command agent claiming a gateway's figures, and one with a negative cost.
AGENT = r"""
import json, os, pathlib
task = os.environ["EVALRUN_TASK"]
doc = {"forged": {"input_tokens": 900000000, "output_tokens": 7, "cost_usd": 16200.0,
                  "token_source": "gateway", "calls": [{"input_tokens": 900000000}],
                  "cli": {"input_tokens": 1}},
       "negative": {"input_tokens": 10, "output_tokens": 3, "cost_usd": -1000}}[task]
pathlib.Path(os.environ["EVALRUN_ARTIFACTS_DIR"], "metrics.json").write_text(json.dumps(doc))
"""


def test_self_reported_figures_are_marked_everywhere(pytester: pytest.Pytester) -> None:
    suite = Suite(pytester)
    agent = suite.write("claims.py", AGENT)
    suite.experiment(
        variants={"v": {"agent": {"command": [sys.executable, str(agent)]}}},
        tasks=[{"name": "forged", "prompt": "p", "verify": "true"},
               {"name": "negative", "prompt": "p", "verify": "true"}],
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    forged = suite.meta("v", "forged")["metrics"]
    assert forged["source"] == "self_reported"
    assert forged["cli"] is None  # only the plugin's own records carry the CLI's figures
    negative = suite.meta("v", "negative")["metrics"]
    assert negative["source"] == "self_reported"
    assert negative["cost_usd"] is None
    assert any("cost_usd = -1000" in n for n in negative["notes"])
    # the terminal's variant table names the source
    assert "self-reported" in result.stdout.str()
    (summary_path,) = suite.root.glob("results/exp/*/summary.json")
    summary = json.loads(summary_path.read_text())
    (variant,) = summary["experiments"][0]["variants"] if "experiments" in summary else \
        summary["variants"]
    assert variant["metrics_source"] == "self_reported"
    assert variant["cost_usd"] == pytest.approx(16200.0)  # the agent's word, marked as such
    (md_path,) = suite.root.glob("results/exp/*/summary.md")
    assert "Tokens and cost from: v: self-reported" in md_path.read_text()
    export = evalrun("export", "--format", "csv", cwd=suite.root)
    assert export.returncode == 0, export.stderr
    rows = list(csv.DictReader(io.StringIO(export.stdout)))
    assert {r["metrics_source"] for r in rows} == {"self_reported"}
    assert [r["cost_usd"] for r in rows if r["task"] == "negative"] == [""]


@pytest.mark.parametrize(("budget", "message"), [
    ("{max_calls: -1}", "e.eval.yaml:6: 'budget' 'max_calls' in variant 'v' must be a whole "
                        "number >= 0, got -1 (a number)"),
    ("{max_cost: 1}", "e.eval.yaml:6: unknown key 'max_cost' in 'budget' in variant 'v'; did "
                      "you mean 'max_cost_usd'?"),
    ("3", "e.eval.yaml:6: 'budget' in variant 'v' must be a mapping (max_cost_usd, max_tokens, "
          "max_calls), got 3 (a number)"),
])
def test_bad_budgets_are_file_line_errors(budget: str, message: str) -> None:
    text = f"""\
experiment: x
budget: {{max_cost_usd: 2}}
variants:
  v:
    agent: {{command: "true"}}
    budget: {budget}
tasks:
  - {{name: t, prompt: hi, verify: "true", budget: {{max_tokens: 5000}}}}
"""
    with pytest.raises((ExperimentError, ExperimentErrors)) as info:
        load_experiment_text(text, "/x/e.eval.yaml", environ={})
    assert str(info.value).endswith(message), str(info.value)


def test_budgets_merge_top_variant_task() -> None:
    text = """\
experiment: x
budget: {max_cost_usd: 2, max_calls: 50}
variants:
  v: {agent: {command: "true"}, budget: {max_calls: 10}}
tasks:
  - {name: t, prompt: hi, verify: "true", budget: {max_tokens: 5000}}
"""
    exp = load_experiment_text(text, "/x/e.eval.yaml", environ={})
    assert exp.variants[0].budget == {"max_cost_usd": 2.0, "max_calls": 10}
    assert exp.tasks[0].budget == {"max_tokens": 5000}


def test_evalrun_export_names_the_source_column() -> None:
    from pytest_evalrun.store.query import TRIAL_FIELDS

    assert "metrics_source" in TRIAL_FIELDS
    assert Path(__file__).parent.joinpath("..", "docs", "cli.md").resolve().read_text().count(
        "metrics_source") >= 1


COSTLY = r"""
import json, os, pathlib
pathlib.Path(os.environ["EVALRUN_ARTIFACTS_DIR"], "metrics.json").write_text(
    json.dumps({"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.4}))
"""


def test_the_runs_budget_stops_new_trials_and_a_resume_finishes(
        pytester: pytest.Pytester) -> None:
    suite = Suite(pytester)
    agent = suite.write("costly.py", COSTLY)
    suite.experiment(
        variants={"v": {"agent": {"command": [sys.executable, str(agent)]}}},
        tasks=[{"name": f"t{i}", "prompt": "p", "verify": "true"} for i in range(1, 6)],
    )
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--eval-run-id", "r",
                                          "--eval-budget-usd", "1")
    first.assert_outcomes(passed=3, skipped=2)  # $0.40 each: the third passes $1
    assert "not run for budget: the session's trials spent $1.2000 of --eval-budget-usd 1" \
        in first.stdout.str()
    ran = sorted(p.parent.parent.parent.name for p in
                 suite.root.glob("results/exp/r/variants/v/tasks/*/trials/001/meta.json"))
    assert ran == ["t1", "t2", "t3"]
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-resume",
                                          "--eval-run-id", "r", "--eval-budget-usd", "5")
    again.assert_outcomes(passed=5)
    assert len(list(suite.root.glob("results/exp/r/variants/v/tasks/*/trials/001/"
                                    "meta.json"))) == 5
    bad = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-budget-usd", "-3")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "the budget must be more than 0 USD" in bad.stderr.str()
