"""``evalrun merge SHARD... --into DIR``: combine the shards of a run (see docs/shards.md).

Each SHARD is a directory holding one ``--eval-shard K/N`` session's ``results/`` and ``jobs/``;
DIR gets the merged ``results/`` and ``jobs/``; the trial directories move there (``--keep``:
linked, the shards left as they are). The merged run is finished as a session finishes one
(the same verdict); each merged run's gate is printed. Exit 1 on a conflict (nothing is
written), and with ``--gate`` also when a merged run's gate failed. ``--junit-verdict PATH``
writes the merged runs' verdict file (one testcase per gate).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..layoutjson import Verdict
from ..report.junit_verdict import render_verdict
from ..store.atomic import write_text_atomic
from ..store.merge import MergedRun, MergeError, merge
from .common import CliError, clean, print_json


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "merge",
        help="combine the shards of a run (--eval-shard K/N) into one run",
        description="Each SHARD is a directory holding one shard's results/ and jobs/ (where it "
        "ran, or its unpacked CI artifact). DIR gets the merged results/ and jobs/: the run one "
        "machine would have produced. The trial directories are moved out of the shards (one "
        "rename each: the shards are used up, as downloaded CI artifacts may be); --keep leaves "
        "the shards as they are. Exit 1 on a conflict (two shards with the same trial, or one "
        "experiment defined differently); nothing is written then.",
    )
    p.add_argument("shards", nargs="+", metavar="SHARD", help="a shard's directory")
    p.add_argument("--into", required=True, metavar="DIR", help="where the merged run goes")
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave the shards as they are: hard-link (else copy) every file of their trials "
        "instead of moving the trial directories (a few system calls per file: slower)",
    )
    p.add_argument("--json", action="store_true", help="print the merged runs as JSON")
    p.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 when a merged run's gate failed (as the shards' pytest would have)",
    )
    p.add_argument(
        "--junit-verdict",
        metavar="PATH",
        help="write a JUnit XML file with one testcase per gate of the merged runs (each gated "
        "cell, each variant's regression test, each run's overall gate), failing exactly when "
        "that gate fails: for a CI check",
    )
    p.set_defaults(func=run)


def gate_line(verdict: Verdict) -> str:
    """One line: the merged run's gate, as the session's terminal says it."""
    if not verdict.get("gated"):
        return "gate: none set"
    regressions = verdict.get("regressions") or []
    if verdict.get("passed"):
        return f"gate: PASSED ({verdict.get('gated_cells', 0)} gated cells)"
    failures = verdict.get("failures") or []
    parts = []
    if failures:
        parts.append(f"{len(failures)} gated cell(s) below their min pass rate")
    if regressions:
        parts.append("regressed: " + ", ".join(clean(str(r)) for r in regressions))
    return "gate: FAILED (" + "; ".join(parts or ["see summary.md"]) + ")"


def _failed(merged: list[MergedRun]) -> bool:
    return any(
        m.verdict.get("gated") and not m.verdict.get("passed") for m in merged if not m.copy
    )


def run(args: argparse.Namespace) -> int:
    shards = [Path(s) for s in args.shards]
    for shard in shards:
        if not shard.is_dir():
            raise CliError(f"{shard} is not a directory")
    try:
        merged = merge(shards, Path(args.into), keep=args.keep)
    except MergeError as exc:
        for problem in exc.problems:
            print(f"evalrun merge: conflict: {problem}", file=sys.stderr)
        return 1
    pin_notes = _carry_pins(shards, Path(args.into))
    if args.junit_verdict:
        experiments = [e for m in merged if not m.copy for e in m.summary.get("experiments") or []]
        write_text_atomic(Path(args.junit_verdict).resolve(), render_verdict({}, experiments))
    status = 1 if args.gate and _failed(merged) else 0
    if args.json:
        print_json(
            [
                {
                    "experiment": m.experiment,
                    "run_id": m.run_id,
                    "shards": m.shards,
                    "trials": m.trials,
                    "added": m.added,
                    "changed": m.changed,
                    "run_dir": str(m.run_dir),
                    "copy": m.copy,
                    "verdict": m.verdict,
                }
                for m in merged
            ]
        )
        for note in pin_notes:
            print(f"evalrun merge: note: {clean(note)}", file=sys.stderr)
        return status
    for m in merged:
        if m.copy:
            what = "placed as it is" if m.changed else "there already"
            print(
                f"{m.experiment} run {m.run_id}: the same run in {m.shards} shards, not a "
                f"shard of a run ({what}) -> {m.run_dir}"
            )
            continue
        what = f"{m.added} added" if m.changed else "already merged, nothing changed"
        print(
            f"{m.experiment} run {m.run_id}: {m.trials} trials from {m.shards} shard(s) "
            f"({what}) -> {m.run_dir}"
        )
        print(f"  {gate_line(m.verdict)}")
    for note in pin_notes:
        print(f"note: {clean(note)}")
    return status


def _carry_pins(shards: list[Path], into: Path) -> list[str]:
    """The shards' pinned baselines (results/baselines.json) carried into DIR, so that DIR
    can be kept as the next runs' results/ (the CI recipes do)."""
    from ..store.index import sync_pins
    from ..store.paths import index_db
    from ..store.pins import carry_pins

    results = into.resolve() / "results"
    pins, notes = carry_pins(results, [s / "results" for s in shards])
    if pins and index_db(results).is_file():
        sync_pins(index_db(results), pins)
    return notes
