"""What every ``evalrun`` subcommand shares: where results are, finding a run, tables, JSON.

Errors a user made (a bad argument, a run that does not exist) raise :class:`CliError`, which
``main`` turns into one ``evalrun <command>: error: <reason>`` line and exit status 2, as
argparse does for its own errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..report.table import column_groups as column_groups  # split wide tables (show)
from ..safetext import escape, json_inert
from ..store.layout import has_runs
from ..store.query import IndexMissing, RunNotFound, RunRow, find_runs, open_index, with_counts

#: Environment variable naming the results directory (below ``--results``, above the search).
RESULTS_ENV = "EVALRUN_RESULTS"


class CliError(Exception):
    """A one-line reason; exit status ``code`` (2: bad arguments)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def results_dir(given: str | None) -> Path:
    """``--results DIR``, else ``$EVALRUN_RESULTS``, else the nearest ``results/`` holding an
    ``index.db`` in the current directory or one of its parents, else ``./results``."""
    if given:
        return Path(given)
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env)
    here = Path.cwd()
    for directory in (here, *here.parents):
        if (directory / "results" / "index.db").is_file():
            return directory / "results"
    return here / "results"


def connect(results: Path) -> sqlite3.Connection:
    """The index of ``results``; rebuilt from the files first when it is missing."""
    db = results / "index.db"
    try:
        return open_index(db)
    except IndexMissing:
        pass
    if not has_runs(results):
        raise CliError(f"no runs in {results} (pass --results DIR, or run pytest first)")
    from ..store.rebuild import rebuild_index

    print(f"evalrun: {db} is missing; rebuilding it from the files", file=sys.stderr)
    rebuild_index(results)
    return open_index(db)


def resolve(conn: sqlite3.Connection, ref: str, experiment: str | None = None) -> list[RunRow]:
    """The runs a RUN argument names (one per experiment of that run id)."""
    try:
        return with_counts(conn, find_runs(conn, ref, experiment))
    except RunNotFound as exc:
        raise CliError(str(exc)) from None


def resolve_one(conn: sqlite3.Connection, ref: str, experiment: str | None = None) -> RunRow:
    rows = resolve(conn, ref, experiment)
    if len(rows) > 1:
        names = ", ".join(r.experiment for r in rows)
        raise CliError(
            f"run {rows[0].run_id} has several experiments ({names}): "
            f"add --experiment X or write X/{ref}"
        )
    return rows[0]


def run_dir(results: Path, row: RunRow) -> Path:
    """Where the run is now (not where it was written: results/ may have moved)."""
    return results / row.experiment / row.run_id


def trial_dir(results: Path, row: RunRow, variant: str, task: str, trial: int) -> Path:
    return run_dir(results, row) / "variants" / variant / "tasks" / task / "trials" / f"{trial:03d}"


def shown_path(path: Path | str) -> str:
    """A path as a person wants to read it: relative to the current directory when below it."""
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def clean(text: object) -> str:
    """One line that cannot act on the terminal: control, bidi and invisible characters shown
    escaped (:func:`pytest_evalrun.safetext.escape`)."""
    return escape(text)


def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def pp(diff: float | None) -> str:
    return "-" if diff is None else f"{diff * 100:+.1f} pp"


def p_text(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


#: The width of output that is not a terminal (a CI log, a file, a pipe): nothing is cut.
UNLIMITED_WIDTH = 1_000_000
#: The narrowest ``--width`` (and terminal) tables are fitted to.
MIN_WIDTH = 40
_width: int | None = None


def set_width(width: int | None) -> None:
    """``--width N`` (None: decide by where the output goes)."""
    global _width
    if width is not None and width < MIN_WIDTH:
        raise CliError(f"--width must be at least {MIN_WIDTH}, got {width}")
    _width = width


def terminal_width() -> int:
    """``--width N``; else the terminal's width (``$COLUMNS`` first) when stdout is one; else
    :data:`UNLIMITED_WIDTH`: a CI log or a file has no width, so no value is cut there."""
    if _width is not None:
        return _width
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return UNLIMITED_WIDTH
    return max(MIN_WIDTH, shutil.get_terminal_size((100, 24)).columns)


def add_width_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--width",
        type=int,
        metavar="N",
        default=default,
        help="fit tables to N columns (default: the terminal's width; "
        "no limit when the output is not a terminal)",
    )


def _render(rows: Sequence[Sequence[str]], headers: Sequence[str], align: str) -> list[str]:
    """tabulate's "simple" table (header, dashes, rows, columns two spaces apart), built by
    hand: tabulate guesses every cell's type, which costs a second for 10,000 rows."""
    if len(rows) <= FAST_TABLE_ROWS:
        text = tabulate(
            [list(r) for r in rows],
            headers=list(headers),
            tablefmt="simple",
            disable_numparse=True,
            colalign=tuple("right" if a == "r" else "left" for a in align),
        )
        return text.splitlines()
    widths = [max([len(h) + 2, *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    just = [str.rjust if a == "r" else str.ljust for a in align]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(j(cell, w) for j, cell, w in zip(just, cells, widths, strict=True))

    out = [line(headers).rstrip(), "  ".join("-" * w for w in widths)]
    out.extend(line(r).rstrip() for r in rows)
    return out


#: Tables longer than this are laid out without tabulate (same layout, much faster).
FAST_TABLE_ROWS = 200
#: A column cut to fit the terminal keeps at least this many characters.
MIN_CUT = 4


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def table(
    rows: Sequence[Sequence[str]],
    headers: Sequence[str],
    align: str,
    *,
    shrink: int | None = None,
    width: int | None = None,
) -> list[str]:
    """A table no wider than ``width`` (the terminal's): column ``shrink`` (index), header
    included, is cut to fit with an ellipsis when the table would be wider (to no less than
    :data:`MIN_CUT` characters)."""
    width = width or terminal_width()
    lines = _render(rows, headers, align)
    over = max((len(line) for line in lines), default=0) - width
    if over <= 0 or shrink is None:
        return lines
    room = max([len(headers[shrink]), *(len(r[shrink]) for r in rows)])
    while over > 0 and room > MIN_CUT:  # tabulate pads headers: may take a second round
        room = max(MIN_CUT, room - over)
        cut_rows = [[*r[:shrink], _cut(r[shrink], room), *r[shrink + 1 :]] for r in rows]
        cut_headers = [*headers[:shrink], _cut(headers[shrink], room), *headers[shrink + 1 :]]
        lines = _render(cut_rows, cut_headers, align)
        over = max(len(line) for line in lines) - width
    return lines


def print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write(json_inert(text) + "\n")


def print_lines(lines: Sequence[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))


def add_jobs_option(parser: argparse.ArgumentParser) -> None:
    """``--jobs DIR`` of the subcommands that also touch the Harbor layout."""
    parser.add_argument(
        "--jobs",
        metavar="DIR",
        help="the Pier jobs directory (default: where each "
        "run's summary.json says, else jobs/ beside the results directory)",
    )
