"""``evalrun export [RUN] --format csv|jsonl``: one row per trial, from the index.

Columns: :data:`pytest_evalrun.store.query.TRIAL_FIELDS` (slugs and names, status, reward,
step durations, tokens, cost, model, seed, times, message, paths). ``trial_dir`` is where the
trial is now under ``--results``. docs/cli.md describes every column.

The CSV is safe in a spreadsheet and typed for DuckDB and pandas: a text cell that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return (a formula to a spreadsheet; names,
models and messages are partly the agent's) gets a leading ``'``, as OWASP advises, and its
control, bidi and invisible characters are escaped; numeric columns hold numbers only, and a
numeric column unknown in every row is written ``nan`` rather than left empty, since a reader
that guesses types from the values (DuckDB) would otherwise make it text.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..safetext import escape_lines, json_inert
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


#: Columns holding numbers (or nothing, when unknown).
NUMERIC_FIELDS = frozenset(
    {
        "trial",
        "reward",
        "duration",
        "setup_duration",
        "agent_duration",
        "verify_duration",
        "input_tokens",
        "output_tokens",
        "cache_tokens",
        "cost_usd",
        "seed",
    }
)
#: Columns holding True or False.
BOOLEAN_FIELDS = frozenset({"resumed", "crashed"})
#: A first character that makes a spreadsheet read a cell as a formula (OWASP: CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: What a numeric column unknown in every row holds: read as a (missing) number by DuckDB
#: and pandas alike.
ALL_UNKNOWN = "nan"


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def text_cell(value: Any) -> str:
    """A text cell: escaped (:func:`pytest_evalrun.safetext.escape_lines`) and, when it starts
    like a formula, led by ``'``."""
    if value is None:
        return ""
    text = escape_lines(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_cells(row: dict[str, Any], all_unknown: frozenset[str]) -> list[Any]:
    cells: list[Any] = []
    for field in TRIAL_FIELDS:
        value = row.get(field)
        if field in NUMERIC_FIELDS:
            number = _number(value)
            cells.append(ALL_UNKNOWN if field in all_unknown else "" if number is None else number)
        elif field in BOOLEAN_FIELDS:
            cells.append(bool(value))
        else:
            cells.append(text_cell(value))
    return cells


def _write_csv(rows: Callable[[], Iterator[dict[str, Any]]], out: IO[str]) -> int:
    unknown = set(NUMERIC_FIELDS)
    for row in rows():  # a first pass: which numeric columns are unknown in every row
        unknown -= {f for f in unknown if _number(row.get(f)) is not None}
        if not unknown:
            break
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRIAL_FIELDS)
    n = 0
    for row in rows():
        writer.writerow(csv_cells(row, frozenset(unknown)))
        n += 1
    return n


def _write(rows: Callable[[], Iterator[dict[str, Any]]], fmt: str, out: IO[str]) -> int:
    if fmt == "csv":
        return _write_csv(rows, out)
    n = 0
    for row in rows():
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
                n = _write(rows, args.format, fh)
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc.strerror}") from None
        print(f"{n} trials written to {path}", file=sys.stderr)
    else:
        _write(rows, args.format, sys.stdout)
    return 0
