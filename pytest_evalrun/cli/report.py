"""``evalrun report [RUN] -o FILE.html``: one self-contained HTML report of a run.

The report is written by :func:`pytest_evalrun.store.html_report.write_report` (it reads the
run directory) and rendered by :mod:`pytest_evalrun.report.html`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..store.html_report import write_report
from .common import CliError, connect, resolve_one, results_dir, run_dir


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of a run",
        description="One HTML file (inline CSS and JS, no network, opens from file://): "
        "pass-rate heatmap, comparisons, gate verdict, every trial.",
    )
    p.add_argument("run", nargs="?", default="latest", metavar="RUN", help="default: latest")
    p.add_argument("--experiment", "-e", metavar="X", help="the experiment (when RUN has several)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise CliError(f"-o {out} is a directory; name the .html file to write")
    if not out.parent.is_dir():
        raise CliError(f"-o {out}: no directory {out.parent}")
    results = results_dir(args.results)
    conn = connect(results)
    row = resolve_one(conn, args.run, args.experiment)
    write_report(run_dir(results, row), out)
    print(f"report of {row.experiment}/{row.run_id} written to {out}", file=sys.stderr)
    return 0
