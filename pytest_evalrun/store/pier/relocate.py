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

import functools
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pytest_evalrun.store.atomic import write_text_atomic

__all__ = ["Relocation", "relocate_job_config", "relocate_trial", "relocate_trials"]

#: Threads rewriting trial records at once: the work is file creation and renames, which
#: overlap in the kernel.
_THREADS = 8

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
            (self.old_run_dir.parent.parent, self.new_run_dir.parent.parent),
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


def _escaped(text: str) -> str:
    """``text`` as it appears inside a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


class _Rewriter:
    """Every old prefix replaced in one pass (so a new path that lies under an old one is never
    replaced twice), in JSON text (escaped forms) or plain text. ``file://`` URIs of the old
    directories become the new ones' URIs (percent-encoded as :meth:`Path.as_uri` does)."""

    def __init__(self, moves: Sequence[Relocation], *, json_text: bool) -> None:
        def form(text: str) -> str:
            return _escaped(text) if json_text else text

        table: dict[str, str] = {}
        for move in moves:
            for old, new in move.pairs():
                table.setdefault(form(old), form(new))
                if new:
                    table.setdefault(form(Path(old).as_uri()), form(Path(new).resolve().as_uri()))
        self.table = table
        alternatives = "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))
        # a whole path, or a path's leading directories (then its separator), not part of
        # another name
        self.pattern = re.compile(rf"(?<![\w.~-])({alternatives})(?:(/)|(?=[\"\s]|$))")

    def __call__(self, text: str) -> str:
        if not self.table:
            return text

        def replace(m: re.Match[str]) -> str:
            new, sep = self.table[m.group(1)], m.group(2) or ""
            if new:
                return new + sep
            return "" if sep else "."  # under the shard, elsewhere: relative to it

        return self.pattern.sub(replace, text)


@functools.lru_cache(maxsize=64)
def _rewriter(moves: tuple[Relocation, ...], json_text: bool) -> _Rewriter:
    return _Rewriter(moves, json_text=json_text)


def _rewrite_file(path: Path, rewrite: _Rewriter, json_text: bool) -> bool:
    """Replace ``path`` (not written through: a hard link stays as it was) when a path in it
    changes; True then."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return False
    new = rewrite(text)
    if new == text:
        return False
    if json_text:
        try:
            json.loads(new)
        except ValueError:  # never write a record Harbor cannot read
            return False
    write_text_atomic(path, new)
    return True


def relocate_trial(trial_dir: Path, moves: Sequence[Relocation]) -> bool:
    """Rewrite the trial's records (now in ``trial_dir``) to name where it is now; True when
    a file changed."""
    key = tuple(moves)
    changed = False
    for name in _JSON_RECORDS:
        changed |= _rewrite_file(trial_dir / name, _rewriter(key, True), True)
    for name in _TEXT_RECORDS:
        changed |= _rewrite_file(trial_dir / name, _rewriter(key, False), False)
    return changed


def relocate_trials(job_dir: Path, names: Sequence[str], moves: Sequence[Relocation]) -> int:
    """:func:`relocate_trial` for the trial directories ``names`` of ``job_dir``, several at
    once; the number of trials whose records changed."""
    if len(names) < 2 * _THREADS:
        return sum(relocate_trial(job_dir / name, moves) for name in names)
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        return sum(pool.map(lambda name: relocate_trial(job_dir / name, moves), names))


def relocate_job_config(job_dir: Path, moves: Sequence[Relocation]) -> bool:
    """The job's ``config.json``: ``jobs_dir`` and every other path under a shard's directory
    name the merged job. True when it changed."""
    return _rewrite_file(job_dir / "config.json", _rewriter(tuple(moves), True), True)
