"""``evalrun runs``: one line per run, newest first (from the index alone); pinned baselines
(``evalrun baseline set``) are marked."""

from __future__ import annotations

import argparse
from typing import Any

from ..store.query import RunRow, VariantCounts, list_runs, pins_by_run
from .common import CliError, clean, connect, pct, print_json, print_lines, results_dir, table

#: Runs listed without --limit.
DEFAULT_LIMIT = 20


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "runs",
        parents=[common],
        help="list runs, newest first",
        description="One line per run, newest first: experiment, run id, status, trials, "
        "gate verdict and each variant's pass rate (passed/judged; errors apart); a pinned "
        "baseline (evalrun baseline set) has its pin names in a 'pinned' column.",
    )
    p.add_argument("--experiment", "-e", metavar="X", help="only this experiment (its slug)")
    p.add_argument(
        "--limit",
        "-n",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N runs (default {DEFAULT_LIMIT}; 0: all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def gate_text(row: RunRow) -> str:
    if not row.gated:
        return "-"
    return "passed" if row.gate_passed else "FAILED"


def _variant_text(v: VariantCounts) -> str:
    text = f"{clean(v.name)} {pct(v.pass_rate)}"
    if v.judged:
        text += f" {v.passed}/{v.judged}"
    if v.errors:
        text += f" +{v.errors}E"
    return text


def run_json(row: RunRow, pinned: list[str] | None = None) -> dict[str, Any]:
    return {
        "experiment": row.experiment,
        "experiment_name": row.name,
        "run_id": row.run_id,
        "status": row.status,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "trials": sum(v.trials for v in row.variants),
        "errors": sum(v.errors for v in row.variants),
        "gate": {
            "gated": None if row.gated is None else bool(row.gated),
            "passed": None if row.gate_passed is None else bool(row.gate_passed),
        },
        "variants": [v.to_dict() for v in row.variants],
        "pinned": list(pinned or []),
    }


def run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CliError(f"--limit must be 0 or more, not {args.limit}")
    results = results_dir(args.results)
    conn = connect(results)
    rows = list_runs(conn, args.experiment, args.limit or None)
    pins = pins_by_run(conn)
    if args.json:
        print_json([run_json(r, pins.get(r.key)) for r in rows])
        return 0
    if not rows:
        where = f" of experiment {args.experiment!r}" if args.experiment else ""
        print_lines([f"no runs{where} in {results}"])
        return 0
    body = [
        [
            clean(r.experiment),
            clean(r.run_id),
            r.status,
            str(sum(v.trials for v in r.variants)),
            gate_text(r),
            ", ".join(_variant_text(v) for v in r.variants) or "-",
        ]
        for r in rows
    ]
    headers = ["experiment", "run", "status", "trials", "gate", "pass rate by variant"]
    if any(r.key in pins for r in rows):  # a column only where some run is pinned
        for line, r in zip(body, rows, strict=True):
            line.insert(2, ", ".join(clean(n) for n in pins.get(r.key, [])))
        headers.insert(2, "pinned")
        print_lines(table(body, headers, "llllrll", shrink=6))
        return 0
    print_lines(table(body, headers, "lllrll", shrink=5))
    return 0
