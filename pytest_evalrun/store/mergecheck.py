"""What stops ``evalrun merge`` (:mod:`.merge`) before it writes anything: shards that
conflict with each other (a trial in two shards, an experiment defined differently, other
gates) or with what the target holds already (a trial that differs, a shard an earlier merge
moved elsewhere), and whether every shard holds the same copy of a run."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..finish import Gates, GatesError, gates_differences
from .layout import META, read_run_json
from .shardrun import Shard, TrialKey, read_dict, recorded_gates, trial_dirs

#: In a shard's run directory once a merge has started moving its trials out: where to.
MOVED_MARKER = "merged-into.json"


def conflicts(experiment: str, run_id: str, shards: Sequence[Shard]) -> list[str]:
    problems: list[str] = []
    where = f"experiment {experiment!r} run {run_id!r}"
    owner: dict[TrialKey, Path] = {}
    for shard in shards:
        for key in sorted(shard.trials):
            if key in owner:
                v, t, n = key
                problems.append(
                    f"{where}: trial {v}/{t}/{n:03d} is in two shards: {owner[key]} and "
                    f"{shard.root}"
                )
            else:
                owner[key] = shard.root
    first = shards[0]
    for shard in shards[1:]:
        if shard.run.get("plan") != first.run.get("plan"):
            problems.append(
                f"{where} is defined differently in {first.root} and {shard.root} "
                "(variants, tasks or gates)"
            )
        for option, flag in (
            ("cli_min_pass_rate", "--eval-min-pass-rate"),
            ("baseline", "--eval-baseline"),
        ):
            if shard.summary.get(option) != first.summary.get(option):
                problems.append(
                    f"{where}: {first.root} and {shard.root} were run with different {flag}"
                )
    problems += _gate_conflicts(where, shards)
    definitions: dict[str, tuple[Path, bytes]] = {}
    for shard in shards:
        for rel in shard.definitions:
            if not rel.endswith("/task.json"):
                continue
            content = _definition(shard.run_dir / rel)
            if rel in definitions and definitions[rel][1] != content:
                problems.append(
                    f"{where}: {rel} differs between {definitions[rel][0]} and {shard.root}"
                )
            definitions.setdefault(rel, (shard.root, content))
    return problems


def _gate_conflicts(where: str, shards: Sequence[Shard]) -> list[str]:
    """Shards whose recorded gates' inputs differ, or cannot be read."""
    problems: list[str] = []
    recorded = recorded_gates(shards)
    for shard, gates in recorded:
        try:
            Gates.from_json(gates)
        except GatesError as exc:
            problems.append(f"{where}: {shard.run_dir / 'run.json'}: {exc}")
    if problems or not recorded:
        return problems
    first_shard, first = recorded[0]
    for shard, gates in recorded[1:]:
        differ = gates_differences(first, gates)
        if differ:
            problems.append(
                f"{where}: {first_shard.root} and {shard.root} were run with different gates: "
                + ", ".join(f"{flag} ({_shown(first, flag)} vs {_shown(gates, flag)})"
                            for flag in differ)
            )  # fmt: skip
    return problems


def _shown(gates: Mapping[str, Any], flag: str) -> str:
    """A recorded gate input, short, for a conflict message."""
    from ..finish import GATE_OPTIONS

    key = next(k for k, f in GATE_OPTIONS.items() if f == flag)
    value = gates.get(key)
    if key == "baseline_run" and isinstance(value, dict):
        return f"{value.get('ref')} = run {value.get('run_id')}"
    return json.dumps(value)


def against_target(
    experiment: str,
    run_id: str,
    shards: Sequence[Shard],
    into: Path,
    target: Path,
    merged: Mapping[TrialKey, str],
) -> list[str]:
    """Problems between the shards and what ``into`` holds already (``merged``: the trial
    directories of ``target``, the merged run): a shard an earlier merge moved elsewhere, or
    a trial of a shard that differs from the one already merged."""
    problems: list[str] = []
    where = f"experiment {experiment!r} run {run_id!r}"
    for shard in shards:
        moved_to = read_dict(shard.run_dir / MOVED_MARKER).get("into")
        if moved_to is not None and moved_to != str(into):
            problems.append(
                f"{where}: the trials of {shard.root} were moved into {moved_to} by an "
                f"earlier evalrun merge: merge into {moved_to} again, or merge a fresh copy "
                "of the shard"
            )
    old_gates = (read_run_json(target) or {}).get("gates")
    recorded = recorded_gates(shards)
    if isinstance(old_gates, dict) and recorded:
        differ = gates_differences(old_gates, recorded[0][1])
        if differ:
            problems.append(
                f"{where}: {recorded[0][0].root} was run with other gates than the run an earlier "
                f"merge put in {into}: {', '.join(differ)}"
            )
    for shard in shards:
        for key in sorted(merged.keys() & shard.trials.keys()):
            mine = f"{shard.run_dir}/{shard.trials[key]}/{META}"
            if not _same_file(mine, f"{target}/{merged[key]}/{META}"):
                v, t, n = key
                problems.append(
                    f"{where}: trial {v}/{t}/{n:03d} of {shard.root} differs from the one "
                    f"an earlier merge put in {into}"
                )
    return problems


def _same_file(a: str, b: str) -> bool:
    """The same meta.json: one file (hard links) or the same bytes."""
    try:
        if os.path.samefile(a, b):
            return True
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def _definition(path: Path) -> bytes:
    """A task.json's definition digest (location-independent: see
    ``spec.identity.definition_digest``); for a run written before it existed, the file
    without its absolute paths."""
    data = read_dict(path)
    if "definition" in data:
        return str(data["definition"]).encode()
    for key in ("fixture", "prompt_file"):
        data.pop(key, None)
    return json.dumps(data, sort_keys=True).encode()


def same_copy(shards: Sequence[Shard]) -> bool:
    """Every shard holds the same copy of the run: the same trials (meta.json byte for byte)
    and the same run.json, and the run is not itself a shard waiting to be merged (the same
    shard given twice stays a conflict); a run in one shard only is not a copy."""
    if len(shards) < 2:
        return False
    first = shards[0]
    sessions = first.run.get("sessions") or []
    if "merged_from" not in first.run and any(
        isinstance(x, dict) and x.get("shard") for x in sessions
    ):
        return False
    return all(
        shard.run == first.run
        and _same_trials(first.run_dir, first.trials, shard.run_dir, shard.trials)
        for shard in shards[1:]
    )


def _same_trials(
    a_dir: Path, a: Mapping[TrialKey, str], b_dir: Path, b: Mapping[TrialKey, str]
) -> bool:
    """The same trials in two run directories: the same keys, and each meta.json the same
    (:func:`_same_file`)."""
    return a.keys() == b.keys() and all(
        _same_file(f"{a_dir}/{rel}/{META}", f"{b_dir}/{b[key]}/{META}") for key, rel in a.items()
    )


def copy_against_target(
    experiment: str, run_id: str, shard: Shard, into: Path, target: Path
) -> list[str]:
    """A copied run (see :func:`same_copy`) conflicts with another run of its id in DIR."""
    old = read_run_json(target)
    if not old:
        return []
    theirs = trial_dirs(target)
    if old == shard.run and _same_trials(shard.run_dir, shard.trials, target, theirs):
        return []
    return [
        f"experiment {experiment!r} run {run_id!r}: every shard holds the same copy of it "
        f"(e.g. a restored baseline run), but {into} holds another run of that id"
    ]
