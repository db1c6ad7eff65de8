"""``evalrun check`` (integrity of every run) and ``evalrun reindex`` (rebuild index.db)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_jobs_option, clean, print_json, print_lines, results_dir, shown_path


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        help="check every run: JSON files parse, the index matches them (exit 1 on problems)",
        description="Every JSON file of every run parses (run.json, summary.json, variant.json, "
        "task.json, each trial's meta.json, verify.json, metrics.json, the Pier job's files), "
        "and the index matches them (runs vs run.json, trials vs meta.json). Names each file "
        "with a problem; exit 1 when there is one.",
    )
    add_jobs_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_check)
    r = sub.add_parser(
        "reindex",
        parents=[common],
        help="rebuild results/index.db from the files",
        description="Empty the index and fill it again from run.json, summary.json and every "
        "trial's meta.json (a missing or damaged index.db is created anew). Exit 1 when some "
        "file could not be read (it is named).",
    )
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=run_reindex)


def run_check(args: argparse.Namespace) -> int:
    from ..store.integrity import check_results

    results = results_dir(args.results)
    if not results.is_dir():
        from .common import CliError

        raise CliError(f"no results directory {results}")
    checked, problems = check_results(results, Path(args.jobs) if args.jobs else None)
    if args.json:
        print_json(
            {
                "runs": checked.runs,
                "trials": checked.trials,
                "files": checked.files,
                "problems": [p.to_dict() for p in problems],
            }
        )
    else:
        lines = [clean(f"{shown_path(p.path)}: {p.what}") for p in problems]
        lines.append(
            f"{checked.runs} runs, {checked.trials} trials, {checked.files} JSON files checked: "
            + (f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
               if problems else "no problem")
        )  # fmt: skip
        if problems:
            lines.append("(evalrun reindex rebuilds the index from the files)")
        print_lines(lines)
    return 1 if problems else 0


def run_reindex(args: argparse.Namespace) -> int:
    from ..store.rebuild import rebuild_index

    results = results_dir(args.results)
    if not results.is_dir():
        from .common import CliError

        raise CliError(f"no results directory {results}")
    done = rebuild_index(results)
    if args.json:
        print_json(
            {
                "index": str(results / "index.db"),
                "runs": done.runs,
                "trials": done.trials,
                "replaced_damaged": done.replaced_damaged,
                "skipped": [{"path": str(p), "problem": why} for p, why in done.skipped],
            }
        )
    else:
        lines = [clean(f"{shown_path(p)}: not indexed: {why}") for p, why in done.skipped]
        if done.replaced_damaged:
            lines.append("the old index could not be opened and was replaced")
        lines.append(
            f"{shown_path(results / 'index.db')} rebuilt: {done.runs} runs, {done.trials} trials"
        )
        print_lines(lines)
    return 1 if done.skipped else 0
