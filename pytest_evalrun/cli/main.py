"""``evalrun``: list, show, compare, export, report, check, reindex, gc and merge stored runs;
pin baselines; serve a scripted mock model (``mock-llm``).

Reads ``results/`` (``--results DIR``) and its index; never runs trials. Each subcommand's
module of this package has ``add_parser(subparsers, common)``, which sets the function that
runs it (``args.func``, returning the exit status; ``check.py`` holds ``check`` and
``reindex``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import baseline, check, compare, export, gc, merge, mockllm, report, runs, show
from .common import RESULTS_ENV, CliError, add_width_option, set_width

COMMANDS = (runs, show, compare, export, report, check, gc, merge, baseline, mockllm)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--results",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"the results directory (default: ${RESULTS_ENV}, else the nearest results/ "
        "with an index.db here or above, else ./results)",
    )
    add_width_option(common, argparse.SUPPRESS)
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalrun",
        description="Inspect the runs pytest-evalrun stored in results/ (never runs trials). "
        "RUN is a run id, a unique prefix of one, 'latest' (the default) or 'latest~N', "
        "optionally written EXPERIMENT/RUN. 'evalrun baseline set RUN' pins a run as its "
        "experiment's baseline (--eval-baseline-run baseline).",
    )
    parser.add_argument("--results", metavar="DIR", default=None, help=argparse.SUPPRESS)
    add_width_option(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()
    for module in COMMANDS:
        module.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        set_width(args.width)
        code: int = args.func(args)
        sys.stdout.flush()
    except CliError as exc:
        print(f"evalrun {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # evalrun runs | head: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
