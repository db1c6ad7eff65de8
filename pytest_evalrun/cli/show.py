"""``evalrun show [RUN]``: a run's variant x task table, gate verdict and failed trials.

Everything comes from the index (a 100,000-trial run shows in well under a second), except the
order of variants and tasks (the experiment file's, from run.json's ``plan``) and the message
of a failed trial recorded by an index older than version 2, read from its meta.json (only for
the trials shown).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any, cast

from ..layoutjson import ExperimentSummary, Verdict
from ..report.junit_verdict import render_verdict
from ..report.stats import wilson_interval
from ..store.atomic import write_text_atomic
from ..store.layout import SUMMARY_JSON, load_summary, read_meta, read_run_json
from ..store.query import Cell, RunRow, cells, count_not_passed, trials
from .common import (
    CliError,
    clean,
    column_groups,
    connect,
    pct,
    print_json,
    print_lines,
    resolve,
    results_dir,
    run_dir,
    shown_path,
    table,
    terminal_width,
    trial_dir,
)

#: Failed trials listed without --failed.
DEFAULT_FAILED = 20


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "show",
        parents=[common],
        help="a run's pass rates, gate verdict and failed trials",
        description="A run's variant x task table (k/n = passed/judged, errors apart), each "
        "variant's pass rate with its 95%% interval, the gate verdict and the trials that did "
        "not pass, with their message and directory.",
    )
    p.add_argument("run", nargs="?", default="latest", metavar="RUN", help="default: latest")
    p.add_argument("--experiment", "-e", metavar="X", help="the experiment (when RUN has several)")
    p.add_argument(
        "--failed",
        type=int,
        default=DEFAULT_FAILED,
        metavar="N",
        help=f"list at most N trials that did not pass (default {DEFAULT_FAILED}; 0: all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 when a shown run's gate failed (e.g. to gate CI on a merged run)",
    )
    p.add_argument(
        "--junit-verdict",
        metavar="PATH",
        help="write a JUnit XML file with one testcase per gate of the shown runs (each gated "
        "cell, each variant's regression test, each run's overall gate), failing exactly when "
        "that gate fails: for a CI check (read from each run's summary.json)",
    )
    p.set_defaults(func=run)


Ranks = tuple[dict[str, int], dict[str, int]]


def _plan_ranks(results: Path, row: RunRow) -> Ranks:
    """Each variant's and task's place in the experiment file (run.json's ``plan``); empty
    for a run.json without a plan."""
    try:
        plan = (read_run_json(run_dir(results, row)) or {})["plan"]
        return (
            {str(n): i for i, n in enumerate(plan["variants"])},
            {str(n): i for i, n in enumerate(plan["tasks"])},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return {}, {}


def _file_order(cs: list[Cell], ranks: Ranks) -> list[Cell]:
    """The cells in the file's order of variants, then tasks; names the file does not list
    after them, by slug."""
    variants, tasks = ranks
    last = len(variants) + len(tasks)
    return sorted(
        cs,
        key=lambda c: (
            variants.get(c.variant_name, last), c.variant, tasks.get(c.task_name, last), c.task
        ),
    )


def _task_names(cs: list[Cell], ranks: Ranks) -> list[str]:
    """The run's task names in the file's order (then by slug)."""
    last = len(ranks[1])
    ordered = sorted(cs, key=lambda c: (ranks[1].get(c.task_name, last), c.task))
    return list(dict.fromkeys(c.task_name for c in ordered))


def _verdict(row: RunRow) -> Verdict | None:
    """The run's verdict as the index keeps it (summary.json's, as JSON text)."""
    if not row.verdict:
        return None
    try:
        data = json.loads(row.verdict)
    except ValueError:
        return None
    return cast(Verdict, data) if isinstance(data, dict) else None


def _failing_cells(verdict: Verdict | None) -> set[tuple[str, str]]:
    return {
        (str(f.get("variant")), str(f.get("task")))
        for f in (verdict or {}).get("failures") or []
        if isinstance(f, dict)
    }


def _message(data: dict[str, Any], path: Path) -> str:
    if data.get("message") is not None:
        return str(data["message"])
    # an index older than version 2 has no messages
    return str((read_meta(path) or {}).get("message") or "")


def _failed(
    conn: sqlite3.Connection, results: Path, row: RunRow, limit: int
) -> list[dict[str, Any]]:
    out = []
    for t in trials(conn, row.key, not_passed=True, limit=limit or None):
        path = trial_dir(results, row, t["variant"], t["task"], t["trial"])
        out.append(
            {
                "variant": t["variant_name"],
                "task": t["task_name"],
                "trial": t["trial"],
                "status": t["status"],
                "error_kind": t["error_kind"],
                "message": _message(t, path),
                "trial_dir": str(path),
            }
        )
    return out


def _variants(cs: list[Cell]) -> list[dict[str, Any]]:
    acc: dict[str, dict[str, Any]] = {}
    for c in cs:
        v = acc.setdefault(
            c.variant,
            {"variant": c.variant, "name": c.variant_name, "trials": 0, "passed": 0,
             "judged": 0, "errors": 0},
        )  # fmt: skip
        v["trials"] += c.trials
        v["passed"] += c.passed
        v["judged"] += c.judged
        v["errors"] += c.errors
    for v in acc.values():
        n = v["judged"]
        v["pass_rate"] = v["passed"] / n if n else None
        v["wilson"] = list(wilson_interval(v["passed"], n)) if n else None
    return list(acc.values())


def collect(
    conn: sqlite3.Connection, results: Path, row: RunRow, cs: list[Cell], limit: int
) -> dict[str, Any]:
    """What ``show`` says of one run; ``cs`` in any order (listed in the file's)."""
    ranks = _plan_ranks(results, row)
    cs = _file_order(cs, ranks)
    verdict = _verdict(row)
    return {
        "experiment": row.experiment,
        "experiment_name": row.name,
        "run_id": row.run_id,
        "status": row.status,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "run_dir": str(run_dir(results, row)),
        "git": {
            "commit": row.git_commit,
            "dirty": None if row.git_dirty is None else bool(row.git_dirty),
        },
        "verdict": verdict,
        "variants": _variants(cs),
        "tasks": _task_names(cs, ranks),
        "cells": [
            {
                "variant": c.variant_name,
                "task": c.task_name,
                "trials": c.trials,
                "passed": c.passed,
                "judged": c.judged,
                "errors": c.errors,
                "pass_rate": c.pass_rate,
            }
            for c in cs
        ],
        "not_passed_total": count_not_passed(conn, row.key),
        "not_passed": _failed(conn, results, row, limit),
    }


def _cell_text(c: Cell | None, failing: bool) -> str:
    if c is None:
        return ""
    text = f"{c.passed}/{c.judged}" if c.judged else "-"
    if 0 < c.passed < c.judged:
        text += " ~"
    if failing:
        text += " !"
    if c.errors:
        text += f" +{c.errors}E"
    return text


def _matrix(data: dict[str, Any], row: RunRow, cs: list[Cell], width: int) -> list[str]:
    variants = [v["name"] for v in data["variants"]]  # in the file's order, as the tasks
    tasks = data["tasks"]
    by_key = {(c.variant_name, c.task_name): c for c in cs}
    failing = _failing_cells(data["verdict"])
    grid = [[_cell_text(by_key.get((v, t)), (v, t) in failing) for v in variants] for t in tasks]
    task_w = max([4, *(len(clean(t)) for t in tasks)])
    col_w = [max([len(clean(v)), *(len(r[i]) for r in grid)]) for i, v in enumerate(variants)]
    task_w = min(task_w, max(12, width // 3))
    lines: list[str] = []
    for group in column_groups(col_w, task_w, width):
        headers = ["task", *(clean(variants[i]) for i in group)]
        rows = [[clean(t), *(grid[j][i] for i in group)] for j, t in enumerate(tasks)]
        lines.extend(table(rows, headers, "l" + "r" * len(group), shrink=0, width=width))
    legend = "  k/n = passed/judged, ~ flaky, +NE = N errors (not judged)"
    lines.append(legend + (", ! below its gate" if failing else ""))
    return lines


def _variant_lines(data: dict[str, Any], width: int) -> list[str]:
    rows = []
    for v in data["variants"]:
        ci = v["wilson"]
        rows.append(
            [
                clean(v["name"]),
                pct(v["pass_rate"]),
                f"[{ci[0] * 100:.0f}, {ci[1] * 100:.0f}]%" if ci else "-",
                f"{v['passed']}/{v['judged']}",
                str(v["errors"]),
            ]
        )
    return table(rows, ["variant", "pass rate", "95% CI", "k/n", "errors"], "lrrrr",
                 shrink=0, width=width)  # fmt: skip


def _gate_lines(row: RunRow, verdict: Verdict | None) -> list[str]:
    if not row.gated:
        return ["gate: none set"]
    failures = (verdict or {}).get("failures") or []
    regressions = (verdict or {}).get("regressions")
    regressed = f"; regressed: {', '.join(map(clean, regressions))}" if regressions else ""
    if row.gate_passed:
        return [f"gate: PASSED ({(verdict or {}).get('gated_cells', '?')} gated cells)"]
    gated = (verdict or {}).get("gated_cells", "?")
    lines = [
        f"gate: FAILED ({len(failures)} of {gated} gated cells below their min pass rate"
        f"{regressed})"
    ]
    for f in failures[:10]:
        rate = f.get("pass_rate")
        shown = pct(rate) if rate is not None else "no judged trial"
        lines.append(
            f"  {clean(f.get('variant'))} / {clean(f.get('task'))}: {shown} < "
            f"{pct(f.get('threshold'))}"
        )
    if len(failures) > 10:
        lines.append(f"  ... and {len(failures) - 10} more")
    return lines


def _failed_lines(data: dict[str, Any], width: int) -> list[str]:
    """Two lines per trial that did not pass: what happened (cut to the width), and where."""
    total, shown = data["not_passed_total"], data["not_passed"]
    if not total:
        return ["every trial passed"]
    head = f"trials that did not pass: {total}"
    if len(shown) < total:
        head += f" (first {len(shown)}; --failed 0 lists all, evalrun export has every trial)"
    lines = [head]
    for f in shown:
        status = f["status"] + (f" ({f['error_kind']})" if f["error_kind"] else "")
        what = f"  {clean(f['variant'])} / {clean(f['task'])} / {f['trial']:03d}: {status}"
        if f["message"]:
            what += f": {clean(f['message'])}"
        lines.append(what if len(what) <= width else what[: width - 1] + "…")
        lines.append(f"      {shown_path(f['trial_dir'])}")
    return lines


def render(data: dict[str, Any], row: RunRow, cs: list[Cell]) -> list[str]:
    width = terminal_width()
    status = data["status"]
    t = sum(v["trials"] for v in data["variants"])
    lines = [f"experiment {clean(data['experiment_name'])}, run {clean(row.run_id)}: {status}, "
             f"{t} trial{'s' if t != 1 else ''}"]  # fmt: skip
    when = f"started {row.started_at or '-'}, finished {row.finished_at or '-'}"
    if row.git_commit:
        when += f"; git {row.git_commit[:12]}{' (dirty)' if row.git_dirty else ''}"
    lines.append(when)
    if cs:
        lines.extend(_matrix(data, row, cs, width))
        lines.extend(_variant_lines(data, width))
    lines.extend(_gate_lines(row, data["verdict"]))
    lines.extend(_failed_lines(data, width))
    lines.append(f"results: {shown_path(data['run_dir'])}")
    return lines


def _write_verdict(path: Path, run_dirs: list[Path]) -> None:
    """The shown runs' verdict file, from their summary.json (the gates' full detail)."""
    experiments: list[ExperimentSummary] = []
    for directory in run_dirs:
        file = directory / SUMMARY_JSON
        try:
            experiments += list(load_summary(directory)["experiments"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise CliError(f"{file}: cannot read the run's summary ({exc})") from None
    write_text_atomic(path.resolve(), render_verdict({}, experiments))


def run(args: argparse.Namespace) -> int:
    if args.failed < 0:
        raise CliError(f"--failed must be 0 or more, not {args.failed}")
    results = results_dir(args.results)
    conn = connect(results)
    rows = resolve(conn, args.run, args.experiment)
    all_cells = [cells(conn, r.key) for r in rows]
    datas = [
        collect(conn, results, r, cs, args.failed) for r, cs in zip(rows, all_cells, strict=True)
    ]
    failed = 1 if args.gate and any(r.gated and not r.gate_passed for r in rows) else 0
    if args.junit_verdict:
        _write_verdict(Path(args.junit_verdict), [run_dir(results, r) for r in rows])
    if args.json:
        print_json(datas)
        return failed
    out: list[str] = []
    for i, (data, row, cs) in enumerate(zip(datas, rows, all_cells, strict=True)):
        if i:
            out.append("")
        out.extend(render(data, row, cs))
    print_lines(out)
    return failed
