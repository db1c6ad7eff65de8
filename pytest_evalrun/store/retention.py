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

Deleting is :func:`remove_tree`, not ``shutil.rmtree``: the trees hold whatever the agent made
(a directory 3,000 levels deep, FIFOs, sockets, directories without read or write permission,
names that are not UTF-8). It never recurses (``shutil.rmtree`` does on Python 3.10-3.12 and
ends in a RecursionError), works relative to open directory descriptors (a deep path is
longer than PATH_MAX), keeps one descriptor open at a time, gives a directory of ours that the
agent made unreadable its permissions back, and returns what it could not delete instead of
ignoring it. run.json goes last, after the Pier job, and only when everything else went: a run
that could not be deleted whole is still a run, reported, and finished by the next gc; its index
rows stay until then.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .index import delete_runs
from .layout import RUN_JSON, RUNNING, read_run_json, read_summary
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
    if run.get("status") != RUNNING:
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
        found = read_run_json(rd.path)
        if found is not None:
            by_exp.setdefault(rd.experiment, []).append((rd, dict(found)))
    plan = GcPlan()
    for exp in sorted(by_exp):
        ordered = sorted(
            by_exp[exp], key=lambda r: (str(r[1].get("started_at") or ""), r[0].run_id),
            reverse=True,
        )  # fmt: skip
        for i, (rd, run) in enumerate(ordered):
            summary = read_summary(rd.path)
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


#: What :func:`remove_tree` could not delete: (path, reason).
Leftovers = list[tuple[str, str]]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _open_dir(name: str, parent: int) -> int:
    """Open the directory ``name`` in ``parent`` (never through a link); a directory of ours
    without read or search permission gets them back first."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        os.chmod(name, stat.S_IRWXU, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


class _Level:
    """One directory on the way down: its name in its parent, its identity (to check that
    ``..`` leads back to the parent), its subdirectories still to delete, and whether
    something in it could not be deleted."""

    def __init__(self, name: str, fd: int, path: str) -> None:
        st = os.fstat(fd)
        self.name = name
        self.path = path
        self.ident = (st.st_dev, st.st_ino)
        self.pending: list[str] = []
        self.failed = False
        if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:  # we must list it and remove from it
            with contextlib.suppress(OSError):  # not ours: its group or other bits may do
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)


def _empty(fd: int, level: _Level, keep: str | None, left: Leftovers) -> None:
    """Unlink every entry of the directory that is not a directory (files, links, FIFOs,
    sockets, devices); note the subdirectories in ``level.pending``."""
    with os.scandir(fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if name == keep:
            continue
        if is_dir:
            level.pending.append(name)
            continue
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append((os.path.join(level.path, name), exc.strerror or str(exc)))
            level.failed = True


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _Remover:
    """Deletes one tree depth first, holding one directory descriptor (``self.fd``) at a time:
    down with ``openat(name)``, back up with ``openat("..")`` checked against the parent's
    identity."""

    def __init__(self, path: Path, fd: int) -> None:
        self.fd = fd
        self.left: Leftovers = []
        self.top = _Level("", fd, str(path))
        self.stack = [self.top]

    def _down(self, level: _Level) -> None:
        name = level.pending.pop()
        child_path = os.path.join(level.path, name)
        try:
            child = _open_dir(name, self.fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.left.append((child_path, _why(exc)))
            level.failed = True
            return
        try:
            new = _Level(name, child, child_path)
            _empty(child, new, None, self.left)
        except OSError as exc:
            os.close(child)
            self.left.append((child_path, _why(exc)))
            level.failed = True
            return
        os.close(self.fd)
        self.fd = child
        self.stack.append(new)

    def _up(self) -> bool:
        """Back to the parent and delete the directory just emptied; False when the parent is
        no longer where it was (moved meanwhile)."""
        level = self.stack.pop()
        parent = self.stack[-1]
        up = os.open("..", _DIR_FLAGS, dir_fd=self.fd)
        os.close(self.fd)
        self.fd = up
        st = os.fstat(up)
        if (st.st_dev, st.st_ino) != parent.ident:
            self.left.append((level.path, "moved while it was being deleted"))
            return False
        if level.failed:
            parent.failed = True
            return True
        try:
            os.rmdir(level.name, dir_fd=up)
        except OSError as exc:
            self.left.append((level.path, _why(exc)))
            parent.failed = True
        return True

    def below(self, keep: str | None) -> bool:
        """Delete everything in the tree but ``keep`` (a file name at the top); False when
        something could not be deleted."""
        _empty(self.fd, self.top, keep, self.left)
        while len(self.stack) > 1 or self.top.pending:
            level = self.stack[-1]
            if level.pending:
                self._down(level)
            elif not self._up():
                return False
        return not self.top.failed


def remove_tree(path: Path, *, last: str | None = None, delete_last: bool = True) -> Leftovers:
    """Delete ``path`` and everything below it, iteratively (see the module docstring);
    ``last`` (a file name in ``path``) is deleted only once everything else is gone, and not at
    all unless ``delete_last``. Returns what could not be deleted; [] when ``path`` is gone (or
    never was)."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            return [(str(path), _why(exc))]
        try:  # a file or a link: unlink it
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc2:
            return [(str(path), _why(exc2))]
        return []
    try:
        remover = _Remover(path, fd)
    except OSError as exc:
        os.close(fd)
        return [(str(path), _why(exc))]
    try:
        if not remover.below(last) or (last is not None and not delete_last):
            return remover.left
        if last is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(last, dir_fd=remover.fd)
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        where = remover.stack[-1].path if remover.stack else str(path)
        remover.left.append((where, _why(exc)))
    finally:
        os.close(remover.fd)
    return remover.left


@dataclass
class GcResult:
    """What :func:`delete` did: the runs deleted whole, and those it could not."""

    deleted: list[GcRun] = field(default_factory=list)
    #: (run, what could not be deleted): the run is still there, run.json included.
    failed: list[tuple[GcRun, Leftovers]] = field(default_factory=list)


def delete(results: Path, runs: list[GcRun]) -> GcResult:
    """Delete each run's directory (run.json last) and Pier job, then the index rows of the
    runs deleted whole."""
    done = GcResult()
    for run in runs:
        left: Leftovers = []
        if run.job_dir is not None:
            left += remove_tree(run.job_dir)
        left += remove_tree(run.path, last=RUN_JSON, delete_last=not left)
        if left:
            done.failed.append((run, left))
            continue
        done.deleted.append(run)
        with contextlib.suppress(OSError):
            run.path.parent.rmdir()  # the experiment's directory, once empty
    db = index_db(results)
    if done.deleted and db.is_file():
        delete_runs(db, [(r.experiment, r.run_id) for r in done.deleted])
    return done
