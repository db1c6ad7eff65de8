"""``evalrun export [RUN] --format csv|jsonl``: one row per trial, from the index.

Columns: :data:`pytest_evalrun.store.query.TRIAL_FIELDS` (slugs and names, status, reward,
step durations, tokens, cost, model, seed, times, message, paths). ``trial_dir`` is where the
trial is now under ``--results``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..safetext import json_inert
from ..store.query import TRIAL_FIELDS, trials
from .common import CliError, connect, resolve, results_dir, trial_dir


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="one row per trial, as CSV or JSON lines",
        description="One row per trial of the run (every experiment of it): names, status, "
        "reward, durations, tokens, cost, paths.",
    )
    p.add_argument("run", nargs="?", default="latest", metavar="RUN", help="default: latest")
    p.add_argument("--experiment", "-e", metavar="X", help="only this experiment")
    p.add_argument("--format", "-f", required=True, choices=("csv", "jsonl"))
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=run)


def _write(rows: Iterator[dict[str, Any]], fmt: str, out: IO[str]) -> int:
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(TRIAL_FIELDS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    else:
        for row in rows:
            out.write(json_inert(json.dumps(row, ensure_ascii=False)) + "\n")
            n += 1
    return n


def run(args: argparse.Namespace) -> int:
    results = results_dir(args.results)
    conn = connect(results)
    runs = resolve(conn, args.run, args.experiment)

    def rows() -> Iterator[dict[str, Any]]:
        for r in runs:
            for t in trials(conn, r.key):
                t["trial_dir"] = str(trial_dir(results, r, t["variant"], t["task"], t["trial"]))
                yield t

    if args.output:
        path = Path(args.output)
        try:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                n = _write(rows(), args.format, fh)
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc.strerror}") from None
        print(f"{n} trials written to {path}", file=sys.stderr)
    else:
        _write(rows(), args.format, sys.stdout)
    return 0
