"""Retention (``evalrun gc``): delete all but the newest N runs of each experiment.

Runs are read from the files (run.json), newest first by ``started_at`` then run id; the
newest ``keep`` of each experiment stay. Of the older ones, each is deleted with its Pier job
(``<jobs>/<run id>__<experiment>``, only when the job's marker names that run) and its index
rows, except a run that may still be running:

- its run.json says ``running``, and
- one of its trial claim locks (``.locks/*.lock``) is held by a process, or its latest
  session started less than :data:`LIVE_HOURS` hours ago.

Such a run is skipped and reported. A ``running`` run whose pytest was killed long ago (no
lock held, old session) is deleted like any other. A pinned baseline (``evalrun baseline
set``, read from ``results/baselines.json``) is never deleted: it is kept and reported too.
A directory without a readable run.json is not a run as far as gc is concerned: it is left
alone (``evalrun check`` names it).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .atomic import read_json
from .index import delete_runs
from .paths import index_db
from .pins import pinned_runs, read_pins
from .walk import RunDir, iter_run_dirs

#: A ``running`` run whose latest session started less than this many hours ago is kept.
LIVE_HOURS = 24


@dataclass(frozen=True)
class GcRun:
    experiment: str
    run_id: str
    path: Path
    status: str
    started_at: str
    job_dir: Path | None
    #: Why it is kept although old (empty when it is deleted).
    kept_because: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "run_id": self.run_id,
            "run_dir": str(self.path),
            "status": self.status,
            "started_at": self.started_at,
            "job_dir": str(self.job_dir) if self.job_dir else None,
            "kept_because": self.kept_because or None,
        }


@dataclass
class GcPlan:
    delete: list[GcRun] = field(default_factory=list)
    keep: list[GcRun] = field(default_factory=list)
    #: Old runs kept because they may be running.
    live: list[GcRun] = field(default_factory=list)
    #: Old runs kept because they are pinned baselines.
    pinned: list[GcRun] = field(default_factory=list)


def _parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def lock_held(run_dir: Path) -> bool:
    """True when a process holds one of the run's trial claim locks."""
    locks = run_dir / ".locks"
    for path in sorted(locks.glob("*.lock")) if locks.is_dir() else []:
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
    return False


def live_reason(run_dir: Path, run: dict[str, Any], now: datetime) -> str:
    """Why a run may still be running ('' when it is not)."""
    if run.get("status") != "running":
        return ""
    if lock_held(run_dir):
        return "running: a process holds one of its trial locks"
    sessions = run.get("sessions") or []
    starts = [_parse_time(str(s.get("started_at") or "")) for s in sessions if isinstance(s, dict)]
    starts.append(_parse_time(str(run.get("started_at") or "")))
    latest = max((s for s in starts if s is not None), default=None)
    if latest is not None and now - latest < timedelta(hours=LIVE_HOURS):
        return f"running: its latest session started less than {LIVE_HOURS} h ago"
    return ""


def plan_gc(
    results: Path,
    keep: int,
    find_job: Callable[[RunDir, Any], Path | None],
    *,
    now: datetime | None = None,
) -> GcPlan:
    """What ``gc --keep keep`` would delete (see the module docstring). Raises
    :class:`~.pins.PinsError` when the pins file cannot be read (nothing is deleted then)."""
    now = now or datetime.now(timezone.utc)
    pins = pinned_runs(read_pins(results))
    by_exp: dict[str, list[tuple[RunDir, dict[str, Any]]]] = {}
    for rd in iter_run_dirs(results):
        try:
            run = read_json(rd.path / "run.json")
        except (OSError, ValueError):
            continue
        if isinstance(run, dict):
            by_exp.setdefault(rd.experiment, []).append((rd, run))
    plan = GcPlan()
    for exp in sorted(by_exp):
        ordered = sorted(
            by_exp[exp], key=lambda r: (str(r[1].get("started_at") or ""), r[0].run_id),
            reverse=True,
        )  # fmt: skip
        for i, (rd, run) in enumerate(ordered):
            summary: Any = None
            with contextlib.suppress(OSError, ValueError):
                summary = read_json(rd.path / "summary.json")
            item = GcRun(
                rd.experiment,
                rd.run_id,
                rd.path,
                str(run.get("status") or ""),
                str(run.get("started_at") or ""),
                find_job(rd, summary),
            )
            if i < keep:
                plan.keep.append(item)
                continue
            names = pins.get(rd.key)
            reason = live_reason(rd.path, run, now)
            if names:
                pinned = ", ".join(repr(n) for n in names)
                plan.pinned.append(replace(item, kept_because=f"pinned as baseline {pinned}"))
            elif reason:
                plan.live.append(replace(item, kept_because=reason))
            else:
                plan.delete.append(item)
    return plan


def delete(results: Path, runs: list[GcRun]) -> None:
    """Delete the runs' directories and Pier jobs, then their index rows."""
    for run in runs:
        shutil.rmtree(run.path, ignore_errors=True)
        if run.job_dir is not None:
            shutil.rmtree(run.job_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.path.parent.rmdir()  # the experiment's directory, once empty
    db = index_db(results)
    if runs and db.is_file():
        delete_runs(db, [(r.experiment, r.run_id) for r in runs])
