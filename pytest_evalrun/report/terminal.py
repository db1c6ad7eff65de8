"""The terminal summary: lines to print at the end of the session, from a summary dict.

Per experiment: a table with one row per task and one column per variant (``k/n`` cells, so
many tasks stay one short line each), a table of variants (pass rate, Wilson 95% interval,
timeouts and errors apart, resumed, pass@k, mean agent time, tokens and cost when known), the
paired comparisons against the baseline, flaky tasks, the gate verdict and where the results
are. Pure: :func:`render_terminal` returns lines; the plugin writes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

from ..safetext import escape
from .fmt import fmt_p, fmt_pct, fmt_pp, plural, totals_text
from .table import (
    EFFORT_KEYS,
    REGRESSION_ALIGN,
    REGRESSION_HEADER,
    TaskCell,
    columns_grid,
    comparison_details,
    regression_rows,
    regression_title,
    task_grid,
    task_table,
    variant_columns,
)

__all__ = ["render_terminal"]

#: Gate failures listed one per line before "... and N more".
MAX_GATE_FAILURES_SHOWN = 10
#: Flaky tasks listed before "... and N more".
MAX_FLAKY_SHOWN = 20


def _clean(text: object) -> str:
    """One line of text, control, bidi and invisible characters shown escaped."""
    return escape(text)


def _table(headers: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> list[str]:
    colalign = tuple("right" if a == "r" else "left" for a in align)
    text = tabulate(
        [list(r) for r in rows],
        headers=list(headers),
        tablefmt="simple",
        disable_numparse=True,
        colalign=colalign,
    )
    return text.splitlines()


def _cell_text(cell: TaskCell) -> str:
    """``2/3 ~ ! +1E``; ``-`` when nothing was judged."""
    text = f"{cell.passed}/{cell.judged}" if cell.judged else "-"
    if cell.flaky:
        text += " ~"
    if cell.below_gate:
        text += " !"
    if cell.errors:
        text += f" +{cell.errors}E"
    return text


def _experiment_lines(exp: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    head = f"experiment {_clean(exp['name'])}"
    if exp.get("run_id"):
        head += f" (run {_clean(exp['run_id'])})"
    counts = totals_text(exp["totals"], sep="; ", plural_trials=True)
    lines.append(f"{head}: {counts}")
    for note in exp.get("notes", []):
        lines.append(f"note: {_clean(note)}")

    table = task_table(exp)
    if table is not None:
        lines.extend(_table(*task_grid(table, text=_clean, cell=_cell_text, min_header="min")))
        legend = ["k/n = passed/judged", "~ flaky", "+NE = N errors (not judged)"]
        if table.gated:
            legend.insert(2, "! fails its min pass rate (upper bound below it)")
        lines.append("  " + ", ".join(legend))

    if exp["variants"]:
        columns = variant_columns(exp, text=_clean)
        visible = [c for c in columns if c.key not in EFFORT_KEYS or c.known]
        lines.extend(_table(*columns_grid(visible, short=True)))

    if exp["variants"] and exp["variants"][0].get("ci_tasks_like_these", "absent") != "absent":
        lines.append(
            "  95% CI these tasks: Wilson over the trials (the rate on this suite's tasks); "
            "95% CI tasks like these: clustered by task (the rate on the tasks they stand for)"
        )
    for c in exp["comparisons"]:
        lines.append(_comparison_line(c))

    regression = exp.get("regression")
    if regression:
        lines.append(
            f"regression gate against run {_clean(regression['baseline_run'])} "
            f"({_clean(regression_title(regression))}):"
        )
        rows = regression_rows(regression, text=_clean)
        lines.extend(_table(REGRESSION_HEADER, REGRESSION_ALIGN, rows))
        for note in regression.get("notes", []):
            lines.append(f"note: {_clean(note)}")

    flaky = exp["flaky"]
    if flaky:
        shown = ", ".join(
            f"{_clean(f['task'])} ({_clean(f['variant'])} {f['passed']}/{f['n']})"
            for f in flaky[:MAX_FLAKY_SHOWN]
        )
        more = (
            f", ... and {len(flaky) - MAX_FLAKY_SHOWN} more" if len(flaky) > MAX_FLAKY_SHOWN else ""
        )
        lines.append(f"flaky: {shown}{more}")

    lines.extend(_verdict_lines(exp["verdict"]))
    where = f"results: {_clean(_here(exp['results_dir']))}" if exp.get("results_dir") else ""
    if exp.get("jobs_dir"):
        where += ("; " if where else "") + f"jobs: {_clean(_here(exp['jobs_dir']))}"
    if where:
        lines.append(where)
    return lines


def _here(path: str) -> str:
    """A path relative to the current directory (pytest's rootdir, as a rule) when it lies
    inside it, so a CI log does not carry the runner's absolute paths; else as it is (the
    user's own ``--eval-results`` outside the project)."""
    try:
        cwd = os.getcwd()
        if os.path.isabs(path) and os.path.commonpath([cwd, path]) == cwd:
            return os.path.relpath(path, cwd)
    except (OSError, ValueError):
        pass
    return path


def _comparison_line(c: Mapping[str, Any]) -> str:
    text = f"{_clean(c['variant'])} vs {_clean(c['baseline'])}: {fmt_pp(c['diff'])}"
    if c["ci"] is not None:
        lo, hi = c["ci"]
        text += f" [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    label, what = comparison_details(c)
    details = [f"{label.removeprefix('p (').removesuffix(')')} p={fmt_p(c['p_value'])}", what]
    details.append(
        f"{plural(c['tasks_paired'], 'task')}: {c['wins']} better, {c['losses']} worse, "
        f"{c['ties']} same"
    )
    if c["tasks_excluded"]:
        details.append(f"{len(c['tasks_excluded'])} left out (no judged trial)")
    return f"{text} ({'; '.join(details)})"


def _verdict_lines(verdict: Mapping[str, Any]) -> list[str]:
    if not verdict["gated"]:
        return []
    unjudged = [
        f"  {_clean(v)}: no judged trial (only errors or nothing run): the run fails"
        for v in verdict.get("unjudged_variants", [])
    ]
    return _gate_lines(verdict) + unjudged


def _gate_lines(verdict: Mapping[str, Any]) -> list[str]:
    failures = verdict["failures"]
    regressions = verdict.get("regressions")
    if regressions is not None:  # a regression gate (--eval-baseline-run) applies
        return _regression_verdict_lines(verdict)
    if verdict.get("unjudged_variants") and not failures:
        return [
            f"gate: FAILED (all {verdict['gated_cells']} gated variant x task pairs meet their "
            "min pass rate, but a variant has no judged trial)"
        ]
    if verdict["passed"]:
        return [
            f"gate: PASSED (all {verdict['gated_cells']} gated variant x task pairs meet "
            "their min pass rate)"
        ]
    lines = [
        f"gate: FAILED ({len(failures)} of {verdict['gated_cells']} gated variant x task "
        "pairs below their min pass rate)"
    ]
    lines.extend(_failure_line(f) for f in failures[:MAX_GATE_FAILURES_SHOWN])
    if len(failures) > MAX_GATE_FAILURES_SHOWN:
        lines.append(f"  ... and {len(failures) - MAX_GATE_FAILURES_SHOWN} more (see summary.md)")
    return lines


def _regression_verdict_lines(verdict: Mapping[str, Any]) -> list[str]:
    failures, regressions = verdict["failures"], verdict["regressions"]
    reasons = []
    if verdict["gated_cells"]:
        reasons.append(
            f"{len(failures)} of {verdict['gated_cells']} gated variant x task pairs below "
            "their min pass rate"
        )
    reasons.append(
        f"regressed: {', '.join(_clean(r) for r in regressions)}"
        if regressions
        else "no variant regressed"
    )
    word = "PASSED" if verdict["passed"] else "FAILED"
    lines = [f"gate: {word} ({'; '.join(reasons)})"]
    lines.extend(_failure_line(f) for f in failures[:MAX_GATE_FAILURES_SHOWN])
    return lines


def _failure_line(f: Mapping[str, Any]) -> str:
    """``a / t: 1/10 passed, upper bound 39.4% (99.75%) < 60.0%``: the gate's counts (errors
    included under the count policy) and the bound that lies below the minimum."""
    head = f"  {_clean(f['variant'])} / {_clean(f['task'])}: "
    if f["pass_rate"] is None:
        return head + f"no judged trial < {fmt_pct(f['threshold'], 1)}"
    if f.get("upper") is None:  # a summary of an older version
        return head + f"{fmt_pct(f['pass_rate'], 1)} < {fmt_pct(f['threshold'], 1)}"
    return head + (
        f"{f['gate_passed']}/{f['gate_trials']} passed, upper bound "
        f"{fmt_pct(f['upper'], 1)} ({f['level'] * 100:.4g}% one-sided) < "
        f"{fmt_pct(f['threshold'], 1)}"
    )


def render_terminal(summary: Mapping[str, Any]) -> list[str]:
    """Lines for the terminal summary of a run (without trailing newlines)."""
    lines: list[str] = []
    experiments = summary["experiments"]
    for i, exp in enumerate(experiments):
        if i:
            lines.append("")
        lines.extend(_experiment_lines(exp))
    verdict = summary["verdict"]
    if verdict["gated"] and len(experiments) > 1:
        lines.append("")
        unjudged = verdict.get("unjudged_variants") or []
        if verdict["passed"]:
            lines.append("evalrun gates: PASSED")
        else:
            reasons = []
            if verdict["failures"] or not (unjudged or verdict.get("regressions")):
                reasons.append(
                    f"{len(verdict['failures'])} of {verdict['gated_cells']} gated variant x "
                    "task pairs below their min pass rate"
                )
            if verdict.get("regressions"):
                reasons.append(
                    f"regressed: {', '.join(_clean(r) for r in verdict['regressions'])}"
                )
            if unjudged:
                reasons.append(f"no judged trial: {', '.join(_clean(v) for v in unjudged)}")
            lines.append(f"evalrun gates: FAILED ({'; '.join(reasons)})")
    return lines


def interrupted_lines(interrupted: int, not_run: int, command: str) -> list[str]:
    """What an interrupted session says last: that it was interrupted, what it left undone,
    and the command that finishes its runs."""
    undone = [plural(interrupted, "trial") + " stopped while running (errors: interrupted)"]
    if not_run:
        undone.append(f"{not_run} not started")
    return [
        f"interrupted: {'; '.join(undone)}",
        f"finish the run with: {_clean(command)}",
    ]
