"""The tables of one experiment's summary, as plain data that the renderers lay out.

- :func:`task_table`: the variant x task table, one row per task and one :class:`TaskCell` per
  variant; a renderer turns a cell into its own text (``2/3 (67%) ⚠️`` or ``2/3 ~``) with
  :func:`task_grid`.
- :func:`variant_columns`: the per-variant figures as formatted columns; a renderer picks the
  columns it shows and their headers (long or short).

Names are passed through the renderer's ``text`` function (markdown escaping, or control
characters to spaces); nothing here knows either output format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .fmt import (
    fmt_cost,
    fmt_duration,
    fmt_interval,
    fmt_p,
    fmt_pct,
    fmt_pp,
    fmt_source,
    fmt_tokens,
)

__all__ = [
    "EFFORT_KEYS",
    "REGRESSION_ALIGN",
    "REGRESSION_HEADER",
    "Column",
    "Grid",
    "TaskCell",
    "TaskRow",
    "TaskTable",
    "column_groups",
    "columns_grid",
    "comparison_details",
    "regression_rows",
    "regression_title",
    "task_grid",
    "task_table",
    "variant_columns",
]

#: A laid-out table: header, one alignment letter per column (``l`` or ``r``), rows.
Grid = tuple[list[str], str, list[list[str]]]


class TaskCell(NamedTuple):
    """One variant x task of the task table (a tuple: one per cell, built on every render)."""

    passed: int
    #: Judged trials (passed, failed, timeout).
    judged: int
    pass_rate: float | None
    timeouts: int
    errors: int
    #: The cell's trials disagree.
    flaky: bool
    #: Gated and below its minimum pass rate.
    below_gate: bool


class TaskRow(NamedTuple):
    task: str
    #: One cell per variant, in the table's variant order.
    cells: tuple[TaskCell, ...]
    #: The task's effective minimum pass rate (None: not gated).
    min_pass_rate: float | None


@dataclass(frozen=True)
class TaskTable:
    variants: tuple[str, ...]
    #: Any task is gated: the renderers add a minimum-pass-rate column.
    gated: bool
    rows: tuple[TaskRow, ...]


def task_table(exp: Mapping[str, Any]) -> TaskTable | None:
    """The variant x task table of one experiment of a summary; None without variants or tasks."""
    variants = tuple(v["name"] for v in exp["variants"])
    tasks = exp["tasks"]
    if not variants or not tasks:
        return None
    by_key = {(c["variant"], c["task"]): c for c in exp["cells"]}
    rows = tuple(
        TaskRow(
            task=t["name"],
            cells=tuple(_task_cell(by_key[(v, t["name"])]) for v in variants),
            min_pass_rate=t["min_pass_rate"],
        )
        for t in tasks
    )
    gated = any(t["min_pass_rate"] is not None for t in tasks)
    return TaskTable(variants, gated, rows)


def _task_cell(cell: Mapping[str, Any]) -> TaskCell:
    return TaskCell(
        passed=cell["passed"],
        judged=cell["n"],
        pass_rate=cell["pass_rate"],
        timeouts=cell["timeout"],
        errors=cell["errors"],
        flaky=cell["flaky"],
        below_gate=cell["gate"]["met"] is False,
    )


def task_grid(
    table: TaskTable,
    *,
    text: Callable[[str], str],
    cell: Callable[[TaskCell], str],
    min_header: str,
) -> Grid:
    """Lay a task table out: ``task``, one column per variant, then the minimum when gated."""
    header = ["task", *(text(v) for v in table.variants)]
    align = "l" + "r" * len(table.variants)
    if table.gated:
        header.append(min_header)
        align += "r"
    rows: list[list[str]] = []
    for r in table.rows:
        row = [text(r.task), *(cell(c) for c in r.cells)]
        if table.gated:
            row.append(fmt_pct(r.min_pass_rate))
        rows.append(row)
    return header, align, rows


@dataclass(frozen=True)
class Column:
    """One column of the variant table: formatted values, one per variant."""

    key: str
    #: Header in summary.md.
    header: str
    #: Header in the terminal.
    short: str
    values: tuple[str, ...]
    align: str = "r"

    @property
    def known(self) -> bool:
        """Some variant has a value."""
        return any(v != "-" for v in self.values)


#: Keys of the columns that are always given, even when no variant has a value.
EFFORT_KEYS = ("agent_time", "tokens", "cost", "source")


def variant_columns(exp: Mapping[str, Any], *, text: Callable[[str], str]) -> list[Column]:
    """The variant table's columns, in display order.

    ``variant``, ``pass_rate``, ``wilson`` (the 95% interval for these tasks), ``clustered``
    (for tasks like these), ``kn``, ``timeouts``, ``errors``; ``resumed`` when a trial was
    resumed; ``pass@<k>`` for each k when the experiment has k > 1; then
    ``agent_time``, ``tokens``, ``cost`` and ``source`` (where tokens and cost came from:
    :func:`~.fmt.fmt_source`) (always; see :attr:`Column.known`).
    """
    vs: Sequence[Mapping[str, Any]] = exp["variants"]
    ks = [str(k) for k in exp["pass_at_k_ks"]]

    def col(key: str, header: str, short: str, values: Sequence[str]) -> Column:
        return Column(key, header, short, tuple(values))

    cols = [
        Column("variant", "variant", "variant", tuple(text(v["name"]) for v in vs), "l"),
        col("pass_rate", "pass rate", "pass rate", [fmt_pct(v["pass_rate"], 1) for v in vs]),
        col(
            "wilson",
            "95% CI, these tasks (Wilson)",
            "95% CI these tasks",
            [fmt_interval(v.get("ci_these_tasks", v.get("wilson")), 1) for v in vs],
        ),
        col(
            "clustered",
            "95% CI, tasks like these (clustered)",
            "95% CI tasks like these",
            [fmt_interval(v.get("ci_tasks_like_these"), 1) for v in vs],
        ),
        col("kn", "passed/judged", "k/n", [f"{v['passed']}/{v['n']}" for v in vs]),
        col("timeouts", "timeouts", "timeouts", [str(v["timeout"]) for v in vs]),
        col("errors", "errors", "errors", [str(v["errors"]) for v in vs]),
    ]
    if any(v["resumed"] for v in vs):
        cols.append(col("resumed", "resumed", "resumed", [str(v["resumed"]) for v in vs]))
    if len(ks) > 1:
        cols.extend(
            col(f"pass@{k}", f"pass@{k}", f"pass@{k}", [fmt_pct(v["pass_at_k"][k], 1) for v in vs])
            for k in ks
        )
    cols.extend(
        [
            col(
                "agent_time",
                "mean agent time",
                "agent",
                [fmt_duration(v["mean_agent_duration"]) for v in vs],
            ),
            col("tokens", "tokens in/out", "tokens in/out", [fmt_tokens(v["tokens"]) for v in vs]),
            col("cost", "cost", "cost", [fmt_cost(v["cost_usd"]) for v in vs]),
            col("source", "tokens and cost from", "from", [fmt_source(v) for v in vs]),
        ]
    )
    return cols


def column_groups(
    widths: Sequence[float], fixed: float, width: float, *, gap: float = 2
) -> list[list[int]]:
    """Split columns (their widths, ``gap`` apart) into groups that fit beside ``fixed`` of
    leading (and trailing) columns within ``width``: wide tables are printed as several
    narrower ones, each repeating the fixed columns. A column wider than ``width`` on its own
    gets a group of its own. Units are the caller's: characters (terminal) or pixels
    (summary.md)."""
    groups: list[list[int]] = [[]]
    used = fixed
    for i, w in enumerate(widths):
        if groups[-1] and used + gap + w > width:
            groups.append([])
            used = fixed
        groups[-1].append(i)
        used += gap + w
    return groups


def columns_grid(columns: Sequence[Column], *, short: bool = False) -> Grid:
    """Lay columns out as a table (``short``: the terminal's headers)."""
    header = [c.short if short else c.header for c in columns]
    align = "".join(c.align for c in columns)
    rows = [list(r) for r in zip(*(c.values for c in columns), strict=True)]
    return header, align, rows


#: The regression gate's table (``--eval-baseline-run``): one row per variant.
REGRESSION_HEADER = (
    "variant",
    "baseline",
    "this run",
    "difference [95% CI]",
    "p (one-sided)",
    "p (Holm)",
    "tasks paired/dropped",
    "errors",
    "detectable drop",
    "verdict",
)
REGRESSION_ALIGN = "lrrrrrrrrl"


def _regression_verdict(v: Mapping[str, Any], errors: str) -> str:
    dropped = v.get("tasks_dropped") or []
    if v["regressed"]:
        parts = []
        if v.get("significant", v["regressed"]):
            parts.append("REGRESSED")
        if dropped and errors == "count":
            parts.append(f"FAILED: {len(dropped)} task(s) without a judged trial")
        return "; ".join(parts) or "FAILED"
    if v["n_tasks"] == 0:
        return "no task to pair" if v.get("in_baseline") else "not in the baseline"
    return "no regression detected"


def regression_title(regression: Mapping[str, Any]) -> str:
    """What the regression gate is, in one sentence (terminal, summary.md, HTML)."""
    tested = regression.get("variants_tested")
    family = (
        f", Holm over {tested} variant{'s' if tested != 1 else ''}: family-wise false-alarm "
        f"rate at most {regression['alpha']:g}"
        if tested is not None
        else ""
    )
    errors = regression.get("errors", "count")
    errs = (
        "errors count as trials that did not pass"
        if errors == "count"
        else "errors excluded from the test"
    )
    return (
        f"{regression['test']} (exact stratified permutation test on these tasks), "
        f"alpha {regression['alpha']:g}{family}; {errs}"
    )


def regression_rows(
    regression: Mapping[str, Any], *, text: Callable[[str], str]
) -> list[list[str]]:
    """Rows of the regression gate's table (for the terminal and summary.md alike).
    ``detectable drop``: the smallest drop this comparison detects with 80% power."""
    rows = []
    errors = regression.get("errors", "count")
    for v in regression["variants"]:
        ci = (
            f"{fmt_pp(v['diff'])} [{v['ci_low'] * 100:+.1f}, {v['ci_high'] * 100:+.1f}]"
            if v["diff"] is not None and v["ci_low"] is not None and v["ci_high"] is not None
            else fmt_pp(v["diff"])
        )
        drop = v["min_detectable_drop"]
        dropped = v.get("tasks_dropped")
        rows.append(
            [
                text(v["variant"]),
                fmt_pct(v["base_rate"], 1),
                fmt_pct(v["cand_rate"], 1),
                ci,
                fmt_p(v["p_value"]),
                fmt_p(v.get("p_adjusted")),
                f"{v['n_tasks']}/{len(dropped)}" if dropped is not None else str(v["n_tasks"]),
                str(v.get("errors", "-")),
                f"{drop * 100:.1f} pp"
                if drop is not None
                # too few trials: not even a drop to 0% would be caught with 80% power
                else ("-" if v["n_tasks"] == 0 else "none at 80% power"),
                _regression_verdict(v, errors),
            ]
        )
    return rows


def comparison_details(c: Mapping[str, Any]) -> tuple[str, str]:
    """The test and the question of a within-run comparison (``p (two-sided)`` header and a
    label), for a summary of this version or an older one (paired t)."""
    if "p_worse" in c:
        return "p (two-sided)", "exact test weighted by trials, on these tasks"
    return "p (paired t)", "paired t over task means (older summary)"
