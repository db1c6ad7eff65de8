"""Directories removed behind the trials: a trial's temporary directory (its private HOME and
TMPDIR of each step, the unsandboxed workspace's parent) is handed over here once nothing of
the trial uses it, and a thread of this process removes it while the next trial runs.

Why: removing a directory is a wait in the filesystem, not work (``rmdir`` on the ext4 of the
development machine: ~2-3 ms each, 0.07 ms of it CPU; an unsandboxed trial has five), which
need not hold the next trial back.  Nothing reads what is handed over: only the directory's
owner (the environment that made it) hands it over, after moving out what is kept.

The thread is not a daemon (the interpreter waits for it at exit) and ends when nothing is
left; :func:`wait_for_removals` waits for everything handed over so far (called at the end of
every session that ran trials, so that an xdist worker, which may leave without running
Python's exit, leaves nothing behind).  A process killed outright leaves what it had not
removed yet, as it would have left the directory of the trial it was running.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import deque
from pathlib import Path

__all__ = ["remove_later", "wait_for_removals"]

_pending: deque[str] = deque()
_lock = threading.Lock()
_done = threading.Condition(_lock)
_thread: threading.Thread | None = None


def remove_later(path: Path | str) -> None:
    """Remove ``path`` (a directory tree, never followed through links) in the background."""
    global _thread
    with _lock:
        _pending.append(str(path))
        if _thread is None:
            _thread = threading.Thread(target=_drain, name="evalrun-removal")
            _thread.start()


def _drain() -> None:
    global _thread
    while True:
        with _lock:
            if not _pending:
                _thread = None
                _done.notify_all()
                return
            path = _pending[0]
        shutil.rmtree(path, ignore_errors=True)
        with _lock:
            _pending.popleft()


def wait_for_removals(timeout: float | None = None) -> bool:
    """Wait until everything handed over is removed (False: ``timeout`` seconds passed)."""
    with _lock:
        return _done.wait_for(lambda: _thread is None, timeout)


def _forget() -> None:
    """In a forked child: the parent's thread and what it had to do are the parent's."""
    global _lock, _done, _thread
    _pending.clear()
    _lock = threading.Lock()
    _done = threading.Condition(_lock)
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
