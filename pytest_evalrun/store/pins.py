"""Pinned baselines: ``evalrun baseline set RUN [--name NAME]``, ``results/baselines.json``.

A pin names one run of one experiment as that experiment's baseline (``baseline`` unless
another name is given); ``--eval-baseline-run baseline`` (or ``baseline:NAME``) finds it. The
file is the source of truth, as run.json is for runs: it is written atomically under its own
lock, and the index's ``baselines`` table mirrors it (``evalrun reindex`` reloads it from the
file, so pins survive a rebuilt index). The file lives in ``results/`` itself, not in a hidden
directory, so that a CI artifact of ``results/`` carries it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .atomic import load_json, write_json_atomic
from .layout import RUN_JSON

#: The pins file, in the results directory.
PINS_FILE = "baselines.json"
#: The name of a pin made without --name, and what ``--eval-baseline-run baseline`` finds.
DEFAULT_PIN = "baseline"
SCHEMA_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PinsError(ValueError):
    """The pins file cannot be read, or a pin name is not valid (one line, naming the file)."""


@dataclass(frozen=True)
class Pin:
    experiment: str  # slug
    name: str
    run_id: str
    pinned_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pins_path(results: Path) -> Path:
    return results / PINS_FILE


def check_name(name: str) -> str:
    """A valid pin name: letters, digits, '.', '_' and '-' (no ':' or '/': they separate a
    pin's name in ``baseline:NAME`` and an experiment in ``EXPERIMENT/RUN``)."""
    if not _NAME.fullmatch(name):
        raise PinsError(
            f"pin name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return name


def read_pins(results: Path) -> list[Pin]:
    """Every pin, by experiment then name; [] when there is no pins file."""
    path = pins_path(results)
    try:
        data = load_json(path)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise PinsError(f"{path}: cannot be read: {type(exc).__name__}: {exc}") from None
    entries = data.get("pins") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise PinsError(f"{path}: not a pins file (no 'pins' list)")
    pins = []
    for i, entry in enumerate(entries):
        fields = ("experiment", "name", "run_id")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in fields):
            raise PinsError(f"{path}: pins[{i}] is not a pin (experiment, name, run_id)")
        pins.append(
            Pin(entry["experiment"], entry["name"], entry["run_id"], str(entry.get("pinned_at")))
        )
    return sorted(pins, key=lambda p: (p.experiment, p.name))


def find_pin(pins: list[Pin], experiment: str, name: str) -> Pin | None:
    return next((p for p in pins if p.experiment == experiment and p.name == name), None)


def pinned_runs(pins: list[Pin]) -> dict[tuple[str, str], list[str]]:
    """``{(experiment, run id): [pin names]}``."""
    out: dict[tuple[str, str], list[str]] = {}
    for p in pins:
        out.setdefault((p.experiment, p.run_id), []).append(p.name)
    return out


def _write(results: Path, pins: list[Pin]) -> None:
    data = {"schema_version": SCHEMA_VERSION, "pins": [p.to_dict() for p in pins]}
    write_json_atomic(pins_path(results), data, fsync=True)


def _lock(results: Path) -> FileLock:
    results.mkdir(parents=True, exist_ok=True)
    return FileLock(str(pins_path(results)) + ".lock")


def set_pin(results: Path, pin: Pin) -> tuple[list[Pin], Pin | None]:
    """Add ``pin`` (replacing the experiment's pin of that name); returns every pin and the
    replaced one (None when new). Read-modify-write under the file's lock."""
    check_name(pin.name)
    with _lock(results):
        pins = read_pins(results)
        old = find_pin(pins, pin.experiment, pin.name)
        pins = [p for p in pins if p is not old] + [pin]
        pins.sort(key=lambda p: (p.experiment, p.name))
        _write(results, pins)
    return pins, old


def unset_pin(results: Path, experiment: str, name: str) -> tuple[list[Pin], Pin | None]:
    """Remove the experiment's pin ``name``; returns every pin left and the removed one
    (None when there was none: nothing is written)."""
    with _lock(results):
        pins = read_pins(results)
        old = find_pin(pins, experiment, name)
        if old is None:
            return pins, None
        pins = [p for p in pins if p is not old]
        _write(results, pins)
    return pins, old


def carry_pins(results: Path, sources: Sequence[Path]) -> tuple[list[Pin], list[str]]:
    """Bring the pins of ``sources`` (shards' results directories) into ``results`` (a merge's
    DIR/results): a pin whose run is in ``results`` and that every source holding it agrees on.
    A pin ``results`` already has is kept as it is; shards that disagree on a pin are named in
    a note and that pin is not carried.  Returns every pin of ``results`` and the notes."""
    offered: dict[tuple[str, str], set[Pin]] = {}
    notes: list[str] = []
    for source in sources:
        try:
            found = read_pins(source)
        except PinsError as exc:
            notes.append(f"pins not carried: {exc}")
            continue
        for pin in found:
            offered.setdefault((pin.experiment, pin.name), set()).add(pin)
    if not offered:
        return read_pins(results), notes
    with _lock(results):
        pins = read_pins(results)
        have = {(p.experiment, p.name) for p in pins}
        added = False
        for (experiment, name), candidates in sorted(offered.items()):
            if (experiment, name) in have:
                continue
            run_ids = sorted({p.run_id for p in candidates})
            if len(run_ids) > 1:
                notes.append(
                    f"pin {experiment}/{name!r} not carried: the shards pin different runs "
                    f"({', '.join(run_ids)})"
                )
                continue
            pin = min(candidates, key=lambda p: p.pinned_at)
            if not (results / experiment / pin.run_id / RUN_JSON).is_file():
                notes.append(
                    f"pin {experiment}/{name!r} not carried: its run {pin.run_id} is not in "
                    f"{results}"
                )
                continue
            pins.append(pin)
            added = True
        if added:
            pins.sort(key=lambda p: (p.experiment, p.name))
            _write(results, pins)
    return pins, notes
