"""report.table (the tables both renderers lay out) and report.fmt (number formatting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pytest_evalrun.outcome import Metrics, TrialOutcome
from pytest_evalrun.report.fmt import (
    fmt_cost,
    fmt_count,
    fmt_duration,
    fmt_interval,
    fmt_p,
    fmt_pct,
    fmt_pp,
    fmt_tokens,
    plural,
)
from pytest_evalrun.report.summary import ExperimentMeta, build_summary
from pytest_evalrun.report.table import (
    EFFORT_KEYS,
    TaskCell,
    columns_grid,
    task_grid,
    task_table,
    variant_columns,
)
from pytest_evalrun.report.terminal import render_terminal

P, F, T, E = "passed", "failed", "timeout", "error"


def experiment(
    grid: Mapping[tuple[str, str], Sequence[str]],
    *,
    variants: Sequence[str],
    tasks: Sequence[str],
    trials: int,
    **outcome_kwargs: Any,
) -> dict[str, Any]:
    """One experiment's part of a summary built from ``grid``: (variant, task) -> statuses."""
    outs = [
        TrialOutcome("e", v, t, i, status, **outcome_kwargs)
        for (v, t), statuses in grid.items()
        for i, status in enumerate(statuses, 1)
    ]
    meta = ExperimentMeta(
        name="e",
        variants=variants,
        tasks=tasks,
        task_min_pass_rate={"hard": 1.0},
        trials_per_task={t: trials for t in tasks},
    )
    summary = build_summary(
        outs, experiments_meta={"e": meta}, cli_min_pass_rate=None, baseline=None
    )
    exp: dict[str, Any] = summary["experiments"][0]
    return exp


GRID = {
    ("a", "easy"): [P, P],
    ("a", "hard"): [F, E],
    ("b", "easy"): [P, T],
    ("b", "hard"): [P, F],
    ("a", "mid"): [E, E],
    ("b", "mid"): [P, P],
}


# -------------------------------------------------------------------------------- task table


def test_task_table_cells_follow_the_summary() -> None:
    exp = experiment(GRID, variants=["a", "b"], tasks=["easy", "hard", "mid"], trials=2)
    table = task_table(exp)
    assert table is not None
    assert table.variants == ("a", "b")
    assert table.gated is True  # task "hard" has a minimum
    assert [r.task for r in table.rows] == ["easy", "hard", "mid"]
    assert [r.min_pass_rate for r in table.rows] == [None, 1.0, None]
    easy_b, hard_a, mid_a = table.rows[0].cells[1], table.rows[1].cells[0], table.rows[2].cells[0]
    assert easy_b == TaskCell(
        passed=1, judged=2, pass_rate=0.5, timeouts=1, errors=0, flaky=True, below_gate=False
    )
    assert hard_a == TaskCell(
        passed=0, judged=1, pass_rate=0.0, timeouts=0, errors=1, flaky=False, below_gate=True
    )
    assert (mid_a.judged, mid_a.pass_rate, mid_a.errors) == (0, None, 2)


def test_task_table_needs_variants_and_tasks() -> None:
    exp = experiment(GRID, variants=["a", "b"], tasks=["easy", "hard", "mid"], trials=2)
    assert task_table({**exp, "tasks": []}) is None
    assert task_table({**exp, "variants": []}) is None


def test_task_grid_lays_out_with_the_renderers_functions() -> None:
    exp = experiment(GRID, variants=["a", "b"], tasks=["easy", "hard", "mid"], trials=2)
    table = task_table(exp)
    assert table is not None
    header, align, rows = task_grid(
        table, text=str.upper, cell=lambda c: f"{c.passed}|{c.judged}", min_header="MIN"
    )
    assert header == ["task", "A", "B", "MIN"]
    assert align == "lrrr"
    assert rows == [
        ["EASY", "2|2", "1|2", "-"],
        ["HARD", "0|1", "1|2", "100%"],
        ["MID", "0|0", "2|2", "-"],
    ]


# -------------------------------------------------------------------------------- variant table


def test_variant_columns_base_set() -> None:
    exp = experiment(GRID, variants=["a", "b"], tasks=["easy", "hard", "mid"], trials=1)
    cols = variant_columns(exp, text=str)
    keys = [c.key for c in cols]
    # One trial per task: no pass@k; nothing resumed: no resumed column.
    assert keys == [
        "variant", "pass_rate", "wilson", "clustered", "kn", "timeouts", "errors", *EFFORT_KEYS
    ]  # fmt: skip
    by_key = {c.key: c for c in cols}
    assert by_key["kn"].values == ("2/3", "4/6")
    assert by_key["errors"].values == ("3", "0")
    assert by_key["variant"].align == "l"
    assert not by_key["cost"].known
    assert by_key["pass_rate"].known


def test_variant_columns_resumed_pass_at_k_and_effort() -> None:
    exp = experiment(
        GRID,
        variants=["a", "b"],
        tasks=["easy", "hard", "mid"],
        trials=2,
        resumed=True,
        agent_duration=5.0,
        metrics=Metrics(input_tokens=2000, output_tokens=30, cost_usd=0.02),
    )
    cols = variant_columns(exp, text=str)
    keys = [c.key for c in cols]
    assert keys == [
        "variant",
        "pass_rate",
        "wilson",
        "clustered",
        "kn",
        "timeouts",
        "errors",
        "resumed",
        "pass@1",
        "pass@2",
        *EFFORT_KEYS,
    ]
    by_key = {c.key: c for c in cols}
    assert by_key["tokens"].values == ("12k/180", "12k/180")
    assert by_key["cost"].values == ("$0.12", "$0.12")
    header, align, rows = columns_grid([by_key["variant"], by_key["cost"]], short=True)
    assert (header, align, rows) == (["variant", "cost"], "lr", [["a", "$0.12"], ["b", "$0.12"]])
    assert columns_grid([by_key["wilson"]])[0] == ["95% CI, these tasks (Wilson)"]
    assert columns_grid([by_key["wilson"]], short=True)[0] == ["95% CI these tasks"]
    assert columns_grid([by_key["clustered"]])[0] == ["95% CI, tasks like these (clustered)"]
    assert columns_grid([by_key["clustered"]], short=True)[0] == ["95% CI tasks like these"]
    # an older summary.json (no clustered interval) still renders
    old = {**exp, "variants": [{k: v for k, v in row.items()
                                if k not in ("ci_these_tasks", "ci_tasks_like_these")}
                               for row in exp["variants"]]}  # fmt: skip
    old_cols = {c.key: c for c in variant_columns(old, text=str)}
    assert old_cols["wilson"].values == by_key["wilson"].values
    assert old_cols["clustered"].values == ("-", "-")


def test_terminal_leaves_out_unknown_effort_columns() -> None:
    exp = experiment(GRID, variants=["a", "b"], tasks=["easy", "hard", "mid"], trials=1)
    summary = {"experiments": [exp], "verdict": exp["verdict"]}
    header = next(line for line in render_terminal(summary) if line.startswith("variant"))
    assert header.split() == ["variant", "pass", "rate", "95%", "CI", "these", "tasks", "95%",
                              "CI", "tasks", "like", "these", "k/n", "timeouts", "errors"]


# -------------------------------------------------------------------------------- formatting


def test_number_formats() -> None:
    assert (fmt_pct(2 / 3), fmt_pct(2 / 3, 1), fmt_pct(None)) == ("67%", "66.7%", "-")
    assert fmt_interval([0.215, 0.785], 1) == "[21.5, 78.5]%"
    assert (fmt_pp(0.2222), fmt_pp(-0.0004), fmt_pp(None)) == ("+22.2 pp", "+0.0 pp", "-")
    assert (fmt_p(0.0123456), fmt_p(0.0009), fmt_p(None)) == ("0.012", "<0.001", "-")
    assert (plural(1, "error"), plural(0, "error"), plural(2, "trial")) == (
        "1 error",
        "0 errors",
        "2 trials",
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (59.94, "59.9s"), (61.0, "1m01s"), (3599.0, "59m59s"), (7380.0, "2h03m")],
)
def test_fmt_duration(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(999, "999"), (1000, "1.0k"), (12_345, "12k"), (1_250_000, "1.2M"), (12_000_000, "12M")],
)
def test_fmt_count(value: int, text: str) -> None:
    assert fmt_count(value) == text


def test_fmt_tokens_and_cost() -> None:
    assert fmt_tokens({"input": 4900, "output": None}) == "4.9k/-"
    assert fmt_tokens({"input": None, "output": None}) == "-"
    assert [fmt_cost(c) for c in (None, 0.0, 2.5, 0.994, 0.1, 0.0123, 0.00005)] == [
        "-",
        "$0.00",
        "$2.50",
        "$0.99",
        "$0.10",
        "$0.012",
        "<$0.0001",
    ]


def test_durations_round_before_splitting() -> None:
    from pytest_evalrun.report.fmt import fmt_duration

    assert fmt_duration(12.34) == "12.3s"
    assert fmt_duration(59.96) == "1m00s"
    assert fmt_duration(119.6) == "2m00s"
    assert fmt_duration(245.0) == "4m05s"
    assert fmt_duration(3599.6) == "1h00m"
    assert fmt_duration(7380.0) == "2h03m"
