"""``realpath`` at the cost of three system calls, whatever the path's depth.

:func:`os.path.realpath` resolves a path one component at a time in Python (an ``lstat`` per
component, and again per link); the sandbox resolves some sixty paths per step, most of them
deep in the results tree, so that was milliseconds of every sandboxed step. On Linux an
existing path is opened with ``O_PATH`` (nothing is read; links followed as realpath follows
them) and the kernel names what was opened (``/proc/self/fd/N``). A path that does not exist,
or where ``/proc`` is not mounted, goes to :func:`os.path.realpath`.
"""

from __future__ import annotations

import os

__all__ = ["realpath"]

_O_PATH = getattr(os, "O_PATH", 0)
_FD_DIR = "/proc/self/fd/"


def realpath(path: str | os.PathLike[str]) -> str:
    """The canonical absolute path of ``path`` (as :func:`os.path.realpath`)."""
    text = os.path.abspath(path)
    if not _O_PATH:
        return os.path.realpath(text)
    try:
        fd = os.open(text, _O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(text)
    try:
        found = os.readlink(_FD_DIR + str(fd))
    except OSError:
        return os.path.realpath(text)
    finally:
        os.close(fd)
    # the kernel appends " (deleted)" to a path removed meanwhile; only an absolute answer is one
    if not found.startswith("/") or found.endswith(" (deleted)"):
        return os.path.realpath(text)
    return found
