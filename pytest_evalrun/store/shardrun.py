"""A shard's copy of one run, as ``evalrun merge`` reads it (:mod:`.merge`): where it is, its
run.json and summary, its trial directories and its variant.json and task.json files, and the
gates' inputs it recorded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..layoutjson import RunGates, RunJson, Summary
from .layout import read_object
from .walk import iter_trial_rels
from .walk import subdirs as _subdirs

TrialKey = tuple[str, str, int]


@dataclass
class Shard:
    root: Path
    run: RunJson
    run_dir: Path
    summary: Summary
    #: (variant slug, task slug, trial number) -> trial directory, relative to run_dir
    trials: dict[TrialKey, str] = field(default_factory=dict)
    #: variant.json and task.json files, relative to run_dir
    definitions: list[str] = field(default_factory=list)


def trial_dirs(run_dir: Path) -> dict[TrialKey, str]:
    """The run's trial directories, relative to it."""
    return {(v, t, n): rel for v, t, n, rel in iter_trial_rels(run_dir)}


def read_dict(path: Path) -> dict[str, Any]:
    return read_object(path) or {}


def recorded_gates(shards: Sequence[Shard]) -> list[tuple[Shard, RunGates]]:
    """The gates' inputs each shard recorded (shards whose session never finished, or that an
    older pytest-evalrun wrote, have none)."""
    return [(s, s.run["gates"]) for s in shards if isinstance(s.run.get("gates"), dict)]


def definition_files(run_dir: Path) -> list[str]:
    """A run's variant.json and task.json files, relative to it."""
    found = []
    for v in _subdirs(run_dir / "variants"):
        found.append(f"variants/{v}/variant.json")
        found += [
            f"variants/{v}/tasks/{t}/task.json"
            for t in _subdirs(run_dir / "variants" / v / "tasks")
        ]
    return [rel for rel in found if os.path.isfile(f"{run_dir}/{rel}")]
