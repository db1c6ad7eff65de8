"""``evalrun baseline``: pin a run as its experiment's baseline, list and remove pins.

``evalrun baseline set RUN [--name NAME]`` pins RUN (``baseline`` unless NAME is given);
``--eval-baseline-run baseline`` (or ``baseline:NAME``) then compares each later run with it.
``evalrun baseline`` (or ``baseline list``) lists the pins; ``evalrun baseline unset [--name
NAME]`` removes one. Pins are kept in ``results/baselines.json`` and mirrored in the index
(:mod:`pytest_evalrun.store.pins`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    CliError,
    clean,
    connect,
    print_json,
    print_lines,
    resolve,
    results_dir,
    table,
)

NAME_HELP = "the pin's name (default: baseline)"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "baseline",
        parents=[common],
        help="pin a run as its experiment's baseline; list or remove pins",
        description="Pinned baselines: 'set RUN' pins a run as its experiment's baseline "
        "(--eval-baseline-run baseline finds it; with --name NAME, baseline:NAME), 'unset' "
        "removes a pin, 'list' (the default) lists them.",
    )
    p.add_argument("--experiment", "-e", metavar="X", help="list only this experiment's pins")
    p.add_argument("--json", action="store_true", help="print JSON")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    p.set_defaults(func=run, action="list")
    lst = actions.add_parser("list", parents=[common], help="list the pins (the default)")
    lst.add_argument("--experiment", "-e", metavar="X", help="only this experiment")
    lst.add_argument("--json", action="store_true", help="print JSON")
    put = actions.add_parser("set", parents=[common], help="pin RUN as its experiment's baseline")
    put.add_argument("run", metavar="RUN", help="a run id, a unique prefix, latest or latest~N")
    put.add_argument("--name", default=None, metavar="NAME", help=NAME_HELP)
    put.add_argument("--experiment", "-e", metavar="X", help="the run's experiment (its slug)")
    put.add_argument("--json", action="store_true", help="print JSON")
    rm = actions.add_parser("unset", parents=[common], help="remove a pin")
    rm.add_argument("--name", default=None, metavar="NAME", help=NAME_HELP)
    rm.add_argument("--experiment", "-e", metavar="X", help="the pin's experiment (its slug)")
    rm.add_argument("--json", action="store_true", help="print JSON")


def _name(args: argparse.Namespace) -> str:
    from ..store.pins import DEFAULT_PIN, PinsError, check_name

    try:
        return check_name(args.name or DEFAULT_PIN)
    except PinsError as exc:
        raise CliError(str(exc)) from None


def _pins(results: Path) -> list[Any]:
    from ..store.pins import PinsError, read_pins

    try:
        return read_pins(results)
    except PinsError as exc:
        raise CliError(str(exc)) from None


def _sync(results: Path, pins: list[Any]) -> None:
    from ..store.index import sync_pins
    from ..store.paths import index_db

    if index_db(results).is_file():  # else the index, once rebuilt, reads baselines.json
        sync_pins(index_db(results), pins)


def run(args: argparse.Namespace) -> int:
    results = results_dir(args.results)
    if args.action == "set":
        return _set(args, results)
    if args.action == "unset":
        return _unset(args, results)
    return _list(args, results)


def _set(args: argparse.Namespace, results: Path) -> int:
    """Pin RUN.  A run id shared by several experiments (one session over several experiment
    files, the usual CI run) pins each of them, unless ``--experiment`` names one."""
    from ..store.baseline import run_facts
    from ..store.layout import RUNNING
    from ..store.pins import Pin, set_pin
    from ..store.runs import utc_now

    name = _name(args)
    conn = connect(results)
    try:
        rows = resolve(conn, args.run, args.experiment)
    finally:
        conn.close()
    if len({r.run_id for r in rows}) > 1:  # e.g. "latest" of several experiments
        names = ", ".join(f"{r.experiment}/{r.run_id}" for r in rows)
        raise CliError(f"{args.run} names different runs ({names}): add --experiment X")
    checked = []
    for row in rows:
        facts = run_facts(results, row.experiment, row.run_id)
        if facts is None:
            raise CliError(
                f"run {row.experiment}/{row.run_id} has no readable run.json in {results}"
            )
        if facts.status == RUNNING:
            raise CliError(
                f"run {row.experiment}/{row.run_id} is still running: pin it once it has finished"
            )
        checked.append((row, facts.incomplete_reason))
    _pins(results)  # a damaged pins file is named, never overwritten
    done: list[dict[str, Any]] = []
    lines: list[str] = []
    ref = "baseline" if args.name is None else f"baseline:{name}"
    for row, warning in checked:
        pins, old = set_pin(results, Pin(row.experiment, name, row.run_id, utc_now()))
        _sync(results, pins)
        done.append(
            {
                "experiment": row.experiment,
                "name": name,
                "run_id": row.run_id,
                "replaced": old.run_id if old else None,
                "warning": warning or None,
            }
        )
        line = f"pinned {row.experiment}/{row.run_id} as {name!r}"
        if old is not None and old.run_id != row.run_id:
            line += f" (was {old.run_id})"
        lines.append(line + f": --eval-baseline-run {ref} compares with it")
        if warning:
            lines.append(
                f"warning: {warning}: a session that runs every trial refuses it as its baseline"
            )
    if args.json:
        print_json(done[0] if len(done) == 1 else done)
        return 0
    print_lines(lines)
    return 0


def _unset(args: argparse.Namespace, results: Path) -> int:
    from ..store.pins import unset_pin

    name = _name(args)
    matching = [p for p in _pins(results) if p.name == name]
    if args.experiment:
        matching = [p for p in matching if p.experiment == args.experiment]
    if not matching:
        where = f" of experiment {args.experiment!r}" if args.experiment else ""
        raise CliError(f"no pin {name!r}{where} in {results}")
    if len(matching) > 1:
        names = ", ".join(p.experiment for p in matching)
        raise CliError(f"several experiments have a pin {name!r} ({names}): add --experiment X")
    pin = matching[0]
    pins, _ = unset_pin(results, pin.experiment, name)
    _sync(results, pins)
    if args.json:
        print_json({"experiment": pin.experiment, "name": name, "run_id": pin.run_id})
    else:
        print_lines([f"unpinned {pin.experiment}/{pin.run_id} ({name!r})"])
    return 0


def _list(args: argparse.Namespace, results: Path) -> int:
    from ..store.baseline import run_facts

    pins = [p for p in _pins(results) if args.experiment in (None, p.experiment)]
    rows = []
    for p in pins:
        facts = run_facts(results, p.experiment, p.run_id)
        if facts is None:
            state = "missing (deleted, or not restored)"
        else:
            state = facts.incomplete_reason or facts.status
        rows.append((p, state, facts is not None))
    if args.json:
        print_json(
            [{**p.to_dict(), "exists": exists, "state": state} for p, state, exists in rows]
        )
        return 0
    if not rows:
        print_lines([f"no pinned baselines in {results} (pin one: evalrun baseline set RUN)"])
        return 0
    body = [
        [clean(p.experiment), clean(p.name), clean(p.run_id), clean(state), clean(p.pinned_at)]
        for p, state, _ in rows
    ]
    print_lines(table(body, ["experiment", "pin", "run", "state", "pinned at"], "lllll", shrink=3))
    return 0
