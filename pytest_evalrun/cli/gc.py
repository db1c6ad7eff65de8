"""``evalrun gc --keep N``: delete all but the newest N runs of each experiment.

Each deleted run goes with its Pier job and its index rows; a run that may still be running is
kept (see :mod:`pytest_evalrun.store.retention`). A run that could not be deleted whole is
named with what is left of it (exit status 1); its run.json stays, so the next gc finishes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    CliError,
    add_jobs_option,
    clean,
    print_json,
    print_lines,
    results_dir,
    shown_path,
)

#: Paths listed per run that could not be deleted, before "... and N more".
MAX_LEFT_SHOWN = 5


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "gc",
        parents=[common],
        help="delete all but the newest N runs of each experiment",
        description="Delete all but the newest N runs (by start time) of each experiment, "
        "with their Pier jobs and index rows. A run still running and a pinned baseline "
        "(evalrun baseline set) are never deleted.",
    )
    p.add_argument("--keep", type=int, required=True, metavar="N", help="runs kept per experiment")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument("--experiment", "-e", metavar="X", help="only this experiment")
    add_jobs_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..store.integrity import default_jobs
    from ..store.pins import PinsError
    from ..store.retention import delete, plan_gc

    if args.keep < 0:
        raise CliError(f"--keep must be 0 or more, not {args.keep}")
    results = results_dir(args.results)
    if not results.is_dir():
        raise CliError(f"no results directory {results}")
    try:
        plan = plan_gc(
            results, args.keep, default_jobs(results, Path(args.jobs) if args.jobs else None)
        )
    except PinsError as exc:  # which runs are pinned is unknown: delete nothing
        raise CliError(f"{exc}; nothing deleted") from None
    if args.experiment:
        plan.delete = [r for r in plan.delete if r.experiment == args.experiment]
        plan.live = [r for r in plan.live if r.experiment == args.experiment]
        plan.keep = [r for r in plan.keep if r.experiment == args.experiment]
        plan.pinned = [r for r in plan.pinned if r.experiment == args.experiment]
    deleted, failed = plan.delete, []
    if not args.dry_run:
        done = delete(results, plan.delete)
        deleted, failed = done.deleted, done.failed
    if args.json:
        print_json(
            {
                "dry_run": args.dry_run,
                "deleted": [r.to_dict() for r in deleted],
                "not_deleted": [
                    {
                        **r.to_dict(),
                        "left": [{"path": path, "problem": why} for path, why in left],
                    }
                    for r, left in failed
                ],
                "kept": [r.to_dict() for r in plan.keep],
                "kept_running": [r.to_dict() for r in plan.live],
                "kept_pinned": [r.to_dict() for r in plan.pinned],
            }
        )
        return 1 if failed else 0
    verb = "would delete" if args.dry_run else "deleted"
    lines = []
    for r in deleted:
        line = (
            f"{verb} {r.experiment}/{r.run_id} ({r.status or '?'}, started {r.started_at or '?'})"
        )
        if r.job_dir is not None:
            line += f" and {shown_path(r.job_dir)}"
        lines.append(clean(line))
    for r, left in failed:
        lines.append(
            clean(
                f"could not delete {r.experiment}/{r.run_id}: {len(left)} "
                f"path{'s' if len(left) != 1 else ''} left (its run.json is kept: "
                "the next evalrun gc tries again)"
            )
        )
        shown = left[:MAX_LEFT_SHOWN]
        lines.extend(f"  {clean(shown_path(path))}: {clean(why)}" for path, why in shown)
        if len(left) > MAX_LEFT_SHOWN:
            lines.append(f"  ... and {len(left) - MAX_LEFT_SHOWN} more")
    for r in [*plan.live, *plan.pinned]:
        lines.append(clean(f"kept {r.experiment}/{r.run_id}: {r.kept_because}"))
    n = len(deleted)
    text = (
        f"{n} run{'s' if n != 1 else ''} {'would be deleted' if args.dry_run else 'deleted'}, "
    )
    if failed:
        text += f"{len(failed)} could not be deleted, "
    lines.append(
        text + f"{len(plan.keep)} kept (newest {args.keep} per experiment), "
        f"{len(plan.live)} kept as running"
        + (f", {len(plan.pinned)} kept as pinned baselines" if plan.pinned else "")
    )
    print_lines(lines)
    return 1 if failed else 0
