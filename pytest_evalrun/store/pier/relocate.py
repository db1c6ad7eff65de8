"""Trials moved to another job directory (``evalrun merge``): their Harbor records say so.

A shard's trial records name where the shard wrote them: the trial's ``trial_uri``, the
config's ``trials_dir``, the standard trial directory in ``agent_result.metadata.trial_dir``
and ``trial.log``, the job config's ``jobs_dir``, and paths under the shard's directory (the
experiment file in ``task.path`` when the shard was also the project directory). Harbor's
viewer shows them, so after a merge they are rewritten to where the trial is now:
:func:`relocate_trial` for a trial directory, :func:`relocate_job_config` for the job's
``config.json``. Each file is replaced atomically (a trial linked with ``--keep`` shares its
files with the shard: a new file breaks the link, the shard keeps its own records).

Only our own records are rewritten (``config.json``, ``result.json``, ``trial.log``,
``exception.txt``); what the agent and the verifier wrote (``agent/``, ``verifier/``,
``artifacts/``) is evidence and stays byte for byte as recorded, shard paths included when the
verifier printed them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_evalrun.store.atomic import write_json_atomic, write_text_atomic
from pytest_evalrun.store.pier.files import read_json

__all__ = ["Relocation", "relocate_job_config", "relocate_trial"]

#: The trial records that hold paths (ours, not the agent's or the verifier's).
_JSON_RECORDS = ("config.json", "result.json")
_TEXT_RECORDS = ("trial.log", "exception.txt")


@dataclass(frozen=True)
class Relocation:
    """Where one shard's files were and where they are now."""

    #: The shard's directory (the CI artifact, or the machine's project directory).
    shard_root: Path
    #: The shard's job directory and the merged one.
    old_job_dir: Path
    new_job_dir: Path
    #: The shard's run directory (``results/<exp>/<run-id>``) and the merged one.
    old_run_dir: Path
    new_run_dir: Path

    def pairs(self) -> list[tuple[str, str]]:
        """``(old, new)`` path prefixes, most specific first; a path elsewhere under the
        shard's directory becomes relative to it (``suite/exp.eval.yaml``): the shard's
        directory is gone or elsewhere once its trials are merged."""
        out: list[tuple[str, str]] = []
        for old, new in (
            (self.old_job_dir, self.new_job_dir),
            (self.old_run_dir, self.new_run_dir),
            (self.old_job_dir.parent, self.new_job_dir.parent),
            (self.old_run_dir.parent.parent.parent, self.new_run_dir.parent.parent.parent),
            (self.shard_root, None),
        ):
            for variant in _spellings(old):
                pair = (variant, str(new) if new is not None else "")
                if pair not in out and variant != pair[1]:
                    out.append(pair)
        return out


def _spellings(path: Path) -> list[str]:
    """The path as given, absolute and with its links resolved: records may hold any."""
    seen: list[str] = []
    for p in (str(path), os.path.abspath(path), os.path.realpath(path)):
        if p not in seen and p not in ("/", ""):
            seen.append(p)
    return seen


def _rewrite(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    for old, new in pairs:
        if text == old:
            return new or "."
        if old + "/" in text:
            text = text.replace(old + "/", new + "/" if new else "")
        if text.endswith(old) and (len(text) == len(old) or not text[-len(old) - 1].isalnum()):
            text = text[: -len(old)] + (new or ".")
    return text


def _rewrite_obj(obj: Any, pairs: Sequence[tuple[str, str]]) -> Any:
    if isinstance(obj, str):
        return _rewrite(obj, pairs)
    if isinstance(obj, list):
        return [_rewrite_obj(v, pairs) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _rewrite_obj(v, pairs) for k, v in obj.items()}
    return obj


def relocate_trial(trial_dir: Path, moves: Sequence[Relocation]) -> bool:
    """Rewrite the trial's records (now in ``trial_dir``) to name where it is now; True when
    a file changed. ``trial_uri`` and ``trials_dir`` are set from ``trial_dir`` itself."""
    pairs = [p for m in moves for p in m.pairs()]
    changed = False
    for name in _JSON_RECORDS:
        path = trial_dir / name
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        new = _rewrite_obj(data, pairs)
        if name == "result.json" and "trial_uri" in new:
            new["trial_uri"] = trial_dir.resolve().as_uri()
        config = new.get("config") if name == "result.json" else new
        if isinstance(config, dict) and "trials_dir" in config:
            config["trials_dir"] = str(trial_dir.parent)
        if new != data:
            write_json_atomic(path, new)
            changed = True
    for name in _TEXT_RECORDS:
        path = trial_dir / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError):
            continue
        new_text = _rewrite(text, pairs)
        if new_text != text:
            write_text_atomic(path, new_text)
            changed = True
    return changed


def relocate_job_config(job_dir: Path, moves: Sequence[Relocation]) -> bool:
    """The job's ``config.json``: ``jobs_dir`` is the merged jobs directory, and no other
    value names a shard's directory. True when it changed."""
    path = job_dir / "config.json"
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    new = _rewrite_obj(data, [p for m in moves for p in m.pairs()])
    if "jobs_dir" in new:
        new["jobs_dir"] = str(job_dir.parent)
    if new == data:
        return False
    write_json_atomic(path, new)
    return True
