"""``evalrun merge SHARD... --into DIR``: combine the shards of a run (see docs/shards.md).

Each SHARD is a directory holding one ``--eval-shard K/N`` session's ``results/`` and ``jobs/``;
DIR gets the merged ``results/`` and ``jobs/``; the trial directories move there (``--keep``:
linked, the shards left as they are). Exit 1 on a conflict (nothing is written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..store.merge import MergeError, merge
from .common import CliError, print_json


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
    p.set_defaults(func=run)


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
                }
                for m in merged
            ]
        )
        return 0
    for m in merged:
        what = f"{m.added} added" if m.changed else "already merged, nothing changed"
        print(
            f"{m.experiment} run {m.run_id}: {m.trials} trials from {m.shards} shard(s) "
            f"({what}) -> {m.run_dir}"
        )
    return 0
