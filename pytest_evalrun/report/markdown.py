"""summary.md: GitHub-flavoured markdown of a summary, suitable for ``$GITHUB_STEP_SUMMARY``.

:func:`render_markdown` is a pure function over the dict :func:`.summary.build_summary`
returns (so it also works on a summary.json read back from disk).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from .fmt import fmt_interval, fmt_p, fmt_pct, fmt_pp, plural, totals_text
from .table import (
    EFFORT_KEYS,
    REGRESSION_ALIGN,
    REGRESSION_HEADER,
    TaskCell,
    column_groups,
    columns_grid,
    comparison_details,
    regression_rows,
    regression_title,
    task_grid,
    task_table,
    variant_columns,
)

__all__ = ["MARKDOWN_LIMIT_BYTES", "STEP_SUMMARY_WIDTH_PX", "render_markdown", "shown_path"]

#: The width of GitHub's step-summary column: every table of summary.md is split into tables
#: that fit it (as the terminal splits wide tables), each repeating the leading column(s).
STEP_SUMMARY_WIDTH_PX = 880
#: A table cell's horizontal padding and border in GitHub's stylesheet (6px 13px, 1px).
_CELL_PAD_PX = 27
#: Estimated advance of one character of GitHub's 14 px system font, generously (bold
#: headers, wide fonts such as DejaVu Sans): an estimate that errs towards narrower tables.
_CHAR_PX = 7.5
_WIDE_CHAR_PX = 16.0
_UNESCAPE = re.compile(r"\\(.)")

#: summary.md is cut (task rows first) to stay under this many bytes; GitHub's step summary
#: limit is 1 MiB.
MARKDOWN_LIMIT_BYTES = 900 * 1024


def _md(text: object) -> str:
    """Escape text for a GitHub-flavoured markdown table cell or line."""
    s = str(text)
    for ch in ("\\", "`", "*", "_", "[", "]", "<", ">", "|", "#"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\r", " ").replace("\n", " ")


def _md_code(text: object) -> str:
    """Inline code span safe for any text (not for table cells: pipes are left alone)."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    fence = "`"
    while fence in s:
        fence += "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def shown_path(path: str, depth: int = 1) -> str:
    """A path as summary.md shows it: a relative path as it is; an absolute one from its last
    ``depth`` parts (``results/exp/run`` for a run directory ``/runner/work/results/exp/run``,
    depth 3), never absolute: the step summary is read away from the runner, where its
    absolute paths mean nothing."""
    pure = PurePath(path)
    if not pure.is_absolute():
        return path
    parts = pure.parts[1:]
    return "/".join(parts[-depth:]) if parts else "."


def _text_px(cell: str) -> float:
    """Estimated rendered width of a cell's markdown text, in pixels."""
    text = _UNESCAPE.sub(r"\1", cell)
    wide = sum(
        1
        for ch in text
        if unicodedata.east_asian_width(ch) in "WF" or ord(ch) >= 0x2600
    )
    return (len(text) - wide) * _CHAR_PX + wide * _WIDE_CHAR_PX


def _header_px(text: str) -> float:
    """Width of a text that may wrap to two lines (at its spaces), no more: a header."""
    longest = max((_text_px(w) for w in text.split()), default=0.0)
    return max(longest, _text_px(text) * 0.6)


def _md_table_text(
    header: Sequence[str], align: str, rows: Sequence[Sequence[str]]
) -> list[str]:
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out.extend("| " + " | ".join(r) + " |" for r in rows)
    return out


def _md_table(
    header: Sequence[str],
    align: str,
    rows: Sequence[Sequence[str]],
    *,
    lead: int = 1,
    trail: int = 0,
    width: float = STEP_SUMMARY_WIDTH_PX,
) -> list[str]:
    """A markdown table, split into several (a blank line apart) when it would be wider than
    ``width`` pixels: the first ``lead`` and last ``trail`` columns are repeated in each, the
    others grouped as the terminal groups them (:func:`.table.column_groups`)."""
    n = len(header)
    # a text column (left-aligned, not repeated) may wrap to two lines, as headers may
    body = [_header_px if align[i] == "l" and i >= lead else _text_px for i in range(n)]
    px = [
        max([_header_px(header[i]), *(body[i](r[i]) for r in rows)]) + _CELL_PAD_PX
        for i in range(n)
    ]
    if n <= lead + trail or sum(px) <= width:
        return _md_table_text(header, align, rows)
    fixed_cols = [*range(lead), *range(n - trail, n)]
    middle = list(range(lead, n - trail))
    groups = column_groups(
        [px[i] for i in middle], sum(px[i] for i in fixed_cols), width, gap=0
    )
    out: list[str] = []
    for group in groups:
        cols = [*range(lead), *(middle[g] for g in group), *range(n - trail, n)]
        if out:
            out.append("")
        out.extend(
            _md_table_text(
                [header[i] for i in cols],
                "".join(align[i] for i in cols),
                [[r[i] for i in cols] for r in rows],
            )
        )
    return out


def _md_cell(cell: TaskCell) -> str:
    """``2/3 (67%) · 1 timeout, 1 error ⚠️ ❌``; ``-`` when nothing was judged."""
    text = f"{cell.passed}/{cell.judged} ({fmt_pct(cell.pass_rate)})" if cell.judged else "-"
    extras: list[str] = []
    if cell.timeouts:
        extras.append(f"{cell.timeouts} timeout")
    if cell.errors:
        extras.append(plural(cell.errors, "error"))
    if extras:
        text += " · " + ", ".join(extras)
    if cell.flaky:
        text += " ⚠️"
    if cell.below_gate:
        text += " ❌"
    return text


class _TaskLines:
    """The variant x task table of one experiment, formatted once and cut to any row count
    (summary.md is rendered several times over when it must be cut)."""

    def __init__(self, exp: Mapping[str, Any]) -> None:
        table = task_table(exp)
        self.header: list[str] = []
        self.align = ""
        self.rows: list[list[str]] = []
        self.trail = 0
        self.legend: list[str] = []
        if table is None:
            return
        self.header, self.align, self.rows = task_grid(
            table, text=_md, cell=_md_cell, min_header="min pass rate"
        )
        self.trail = 1 if table.gated else 0
        legend = ["k/n = passed/judged; errors are not judged", "⚠️ flaky (trials disagree)"]
        if table.gated:
            legend.append("❌ fails its minimum pass rate (upper bound below it)")
        self.legend = ["", " · ".join(legend), ""]

    def lines(self, max_rows: int | None) -> list[str]:
        if not self.header:
            return []
        shown = self.rows if max_rows is None else self.rows[:max_rows]
        lines = _md_table(self.header, self.align, shown, trail=self.trail)
        if len(shown) < len(self.rows):
            lines.extend(
                [
                    "",
                    f"_… {len(self.rows) - len(shown)} more task rows not shown here "
                    "(summary.md is kept under 1 MiB); summary.json has them all._",
                ]
            )
        return lines + self.legend


def _md_experiment(exp: Mapping[str, Any], tasks: _TaskLines, max_rows: int | None) -> list[str]:
    lines: list[str] = [f"## Experiment {_md_code(exp['name'])}", ""]
    where = []
    if exp.get("run_id"):
        where.append(f"run {_md_code(exp['run_id'])}")
    if exp.get("results_dir"):
        where.append(f"results {_md_code(shown_path(exp['results_dir'], 3))}")
    if exp.get("jobs_dir"):
        where.append(f"jobs {_md_code(shown_path(exp['jobs_dir']))}")
    counts = totals_text(exp["totals"], sep=", ", plural_trials=False)
    lines.append(" · ".join([*where, counts]))
    lines.append("")
    for note in exp.get("notes", []):
        lines.extend([f"> {_md(note)}", ""])
    lines.extend(tasks.lines(max_rows))
    lines.extend(_md_variants(exp))
    lines.extend(_md_comparisons(exp))
    lines.extend(_md_regression(exp))
    lines.extend(_md_flaky(exp["flaky"], max_rows))
    lines.extend(_md_verdict(exp["verdict"], max_rows))
    return lines


def _md_variants(exp: Mapping[str, Any]) -> list[str]:
    """Two tables, each narrow enough for GitHub's content width: the counts, then pass@k,
    agent time, tokens and cost (the variant name first in both)."""
    if not exp["variants"]:
        return []
    name, *rest = variant_columns(exp, text=_md)
    source = next(c for c in rest if c.key == "source")
    detail = [
        c for c in rest if c.key.startswith("pass@") or c.key in EFFORT_KEYS or c.key == "resumed"
    ]
    detail.remove(source)  # a line below the table: a column more would not fit GitHub's width
    counts = [c for c in rest if c not in detail and c is not source]
    with_pass_at_k = len(exp["pass_at_k_ks"]) > 1
    lines = ["### Variants", "", *_md_table(*columns_grid([name, *counts])), ""]
    if exp["variants"][0].get("ci_tasks_like_these", "absent") != "absent":
        lines.extend(
            [
                "Two 95% intervals answer two questions: *these tasks* (Wilson over the trials: "
                "the pass rate on this suite's own tasks) and *tasks like these* (clustered by "
                "task: the mean pass rate over the tasks the suite stands for, which also "
                "varies with the choice of tasks).",
                "",
            ]
        )
    heading = (
        "pass@k, agent time, tokens and cost" if with_pass_at_k else "Agent time, tokens and cost"
    )
    lines.extend([f"### {heading}", "", *_md_table(*columns_grid([name, *detail])), ""])
    if source.known:
        lines.extend(["Tokens and cost from: " + "; ".join(
            f"{n}: {s}" for n, s in zip(name.values, source.values, strict=True)) + " (gateway: "
            "counted by the plugin's model gateway; CLI records: the preset CLI's own, read by "
            "the plugin; self-reported: the agent's word, never summed with the others).", ""])
    if with_pass_at_k:
        lines.extend(
            [
                "pass@k: unbiased estimator (Chen et al. 2021), averaged over the same tasks "
                "for every k (those with at least k judged trials), so pass@k >= pass@1.",
                "",
            ]
        )
    return lines


def _md_comparisons(exp: Mapping[str, Any]) -> list[str]:
    if not exp["comparisons"]:
        return []
    label, what = comparison_details(exp["comparisons"][0])
    header = ["variant", "pass rates", "Δ pass rate", "95% CI", label, "better/worse/same",
              "tasks"]  # fmt: skip
    rows = [
        [
            _md(c["variant"]),
            f"{fmt_pct(c['baseline_pass_rate'], 1)} → {fmt_pct(c['variant_pass_rate'], 1)}",
            fmt_pp(c["diff"]),
            fmt_interval(c["ci"], 1).replace("%", " pp") if c["ci"] else "-",
            fmt_p(c["p_value"]),
            f"{c['wins']}/{c['losses']}/{c['ties']}",
            str(c["tasks_paired"]),
        ]
        for c in exp["comparisons"]
    ]
    errors = exp["comparisons"][0].get("errors")
    return [
        f"### Compared with {_md_code(exp['baseline'])}",
        "",
        *_md_table(header, "lrrrrrr", rows),
        "",
        f"Paired by task ({what}): the same estimand and test as the regression gate and "
        "`evalrun compare`, two-sided here. The question is *these tasks*: does the variant "
        "do better or worse on this suite's tasks. Tasks without a judged trial in both "
        "variants are left out"
        + ("; errors count as trials that did not pass." if errors == "count" else "."),
        "",
    ]


def _md_flaky(flaky: Sequence[Mapping[str, Any]], max_rows: int | None) -> list[str]:
    if not flaky:
        return []
    shown = flaky if max_rows is None else flaky[:max_rows]
    items = ", ".join(
        f"{_md(f['task'])} ({_md(f['variant'])} {f['passed']}/{f['n']})" for f in shown
    )
    more = f", … {len(flaky) - len(shown)} more" if len(shown) < len(flaky) else ""
    return [f"**Flaky tasks** (trials disagree): {items}{more}", ""]


def _md_regression(exp: Mapping[str, Any]) -> list[str]:
    regression = exp.get("regression")
    if not regression:
        return []
    rows = regression_rows(regression, text=_md)
    # two tables of at most 7 columns (GitHub's content width): the verdict, then the counts
    main, detail = (0, 1, 2, 3, 4, 5, 9), (0, 6, 7, 8)
    lines = [
        f"### Regression gate against run {_md_code(regression['baseline_run'])}",
        "",
        *_md_table(
            [REGRESSION_HEADER[i] for i in main],
            "".join(REGRESSION_ALIGN[i] for i in main),
            [[r[i] for i in main] for r in rows],
        ),
        "",
        *_md_table(
            [REGRESSION_HEADER[i] for i in detail],
            "".join(REGRESSION_ALIGN[i] for i in detail),
            [[r[i] for i in detail] for r in rows],
        ),
        "",
        f"Per variant, against the same variant of the baseline run: a "
        f"{_md(regression_title(regression))}. *p (Holm)*: the p-value adjusted for the "
        "variants tested together; a variant regressed when it is below alpha. *Dropped*: "
        "tasks judged in the baseline with no judged trial now. *Detectable drop*: the "
        "smallest drop this comparison detects with 80% power; a smaller one can hide behind "
        '"no regression detected".',
        "",
    ]
    for note in regression.get("notes", []):
        lines.extend([f"> {_md(note)}", ""])
    return lines


def _md_verdict(verdict: Mapping[str, Any], max_rows: int | None) -> list[str]:
    if not verdict["gated"]:
        return ["Gate: none set.", ""]
    unjudged = [
        f"❌ {_md(v)} has no judged trial (only errors, or nothing run): the run fails."
        for v in verdict.get("unjudged_variants", [])
    ]
    lines = _md_gate(verdict, max_rows)
    return lines + ([*unjudged, ""] if unjudged else [])


def _md_gate(verdict: Mapping[str, Any], max_rows: int | None) -> list[str]:
    failures = verdict["failures"]
    regressions = verdict.get("regressions")
    if regressions is not None:
        head = "✅ **Gate passed**" if verdict["passed"] else "❌ **Gate failed**"
        reasons = []
        if verdict["gated_cells"]:
            reasons.append(
                f"{len(failures)} of {verdict['gated_cells']} gated variant x task pairs below "
                "their minimum pass rate"
            )
        reasons.append(
            "regressed: " + ", ".join(_md(r) for r in regressions)
            if regressions
            else "no variant regressed against the baseline run"
        )
        lines = [f"{head}: {'; '.join(reasons)}.", ""]
        if failures:
            lines.extend(_md_gate_failures(failures, max_rows))
        return lines
    if not failures:
        head = "✅ **Gate passed**" if verdict["passed"] else "❌ **Gate failed**"
        return [
            f"{head}: all {verdict['gated_cells']} gated variant x task pairs "
            "meet their minimum pass rate.",
            "",
        ]
    lines = [
        f"❌ **Gate failed**: {len(failures)} of {verdict['gated_cells']} gated variant x task "
        "pairs are below their minimum pass rate.",
        "",
    ]
    return lines + _md_gate_failures(failures, max_rows)


def _md_gate_failures(failures: Sequence[Mapping[str, Any]], max_rows: int | None) -> list[str]:
    lines: list[str] = []
    shown = failures if max_rows is None else failures[:max_rows]
    rows = [
        [
            _md(f["variant"]),
            _md(f["task"]),
            fmt_pct(f["pass_rate"], 1) if f["pass_rate"] is not None else "no judged trial",
            f"{f['gate_passed']}/{f['gate_trials']}" if f.get("gate_trials") else "-",
            f"{fmt_pct(f['upper'], 1)} ({f['level'] * 100:.4g}%)"
            if f.get("upper") is not None
            else "-",
            fmt_pct(f["threshold"], 1),
        ]
        for f in shown
    ]
    if rows:
        header = ["variant", "task", "pass rate", "gate's passed/trials", "upper bound",
                  "minimum"]  # fmt: skip
        lines.extend(_md_table(header, "llrrrr", rows, lead=2))
        lines.extend(
            [
                "",
                "A cell fails when the exact one-sided upper bound of its pass rate (at the "
                "level shown: 95% for all the gated cells together) lies below its minimum; "
                "errors count as trials that did not pass unless excluded.",
            ]
        )
    if len(shown) < len(failures):
        lines.extend(["", f"_… {len(failures) - len(shown)} more not shown._"])
    lines.append("")
    return lines


def _render_markdown_rows(
    summary: Mapping[str, Any], tasks: Sequence[_TaskLines], max_rows: int | None
) -> str:
    lines: list[str] = ["# Evaluation results", ""]
    verdict = summary["verdict"]
    if verdict["gated"]:
        lines.append("✅ All gates passed." if verdict["passed"] else "❌ Gates failed.")
        lines.append("")
    for exp, exp_tasks in zip(summary["experiments"], tasks, strict=True):
        lines.extend(_md_experiment(exp, exp_tasks, max_rows))
    return "\n".join(lines).rstrip("\n") + "\n"


def render_markdown(summary: Mapping[str, Any], *, limit_bytes: int = MARKDOWN_LIMIT_BYTES) -> str:
    """summary.md: GitHub-flavoured markdown, suitable for ``$GITHUB_STEP_SUMMARY``.

    Kept under ``limit_bytes`` (UTF-8): when the full text is larger, task rows (and the
    flaky and gate-failure lists) are cut per experiment, with a note saying so.
    """
    tasks = [_TaskLines(exp) for exp in summary["experiments"]]
    text = _render_markdown_rows(summary, tasks, None)
    if len(text.encode("utf-8")) <= limit_bytes:
        return text
    longest = max(
        (
            max(len(e["tasks"]), len(e["flaky"]), len(e["verdict"]["failures"]))
            for e in summary["experiments"]
        ),
        default=0,
    )
    # Largest row limit that fits, by bisection (the size grows with the limit).
    lo, hi = 0, longest
    best: str | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = _render_markdown_rows(summary, tasks, mid)
        if len(candidate.encode("utf-8")) <= limit_bytes:
            best = candidate
            lo = mid + 1
        else:
            hi = mid - 1
    if best is not None:
        return best
    # Even without task rows it does not fit (a huge number of experiments or variants).
    note = "\n\n_… cut here: summary.md is kept under 1 MiB; summary.json has everything._\n"
    raw = _render_markdown_rows(summary, tasks, 0).encode("utf-8")
    cut = raw[: max(0, limit_bytes - len(note.encode("utf-8")))].decode("utf-8", "ignore")
    return cut[: cut.rfind("\n") + 1] + note
