"""Links out of a trial are not kept as links.

CI uploads ``results/`` and ``jobs/`` (``actions/upload-artifact`` and most archivers store a
link's *target*): a link the agent left in its artifacts or workspace pointing at
``~/.ssh/id_rsa`` or ``/proc/self/environ`` would ship the evaluator's file.  Every symbolic
link whose target, resolved as the kernel would (through other links, ``..``), lies outside
its trial directory is replaced by a small text file naming the target; links that stay
inside the trial are kept.  Nothing is ever followed or written through.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["NOTE", "defuse_link", "defuse_links", "inside"]

NOTE = (
    "evalrun: a symbolic link to {target} was here. It pointed outside its trial, so it was"
    " replaced by this file (an archive of results/ or jobs/ would have stored the target).\n"
)


def inside(path: str, boundary: str) -> bool:
    """Does the link ``path`` resolve to ``boundary`` or below it (both as given: absolute)?"""
    real = os.path.realpath(path)
    root = os.path.realpath(boundary)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def defuse_link(path: Path | str, boundary: Path | str) -> bool:
    """Replace the link ``path`` by a text file naming its target when it resolves outside
    ``boundary``.  Returns True when replaced; a path that is not a link is left alone."""
    text = os.fspath(path)
    try:
        target = os.readlink(text)
    except OSError:
        return False  # not a link (or gone)
    if inside(text, os.fspath(boundary)):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(text)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(text, flags, 0o644)
    except FileExistsError:  # something was put there meanwhile: never write through it
        return True
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(NOTE.format(target=os.fsdecode(target)))
    return True


def defuse_links(root: Path | str, boundary: Path | str) -> list[str]:
    """:func:`defuse_link` for every link under ``root`` (not ``root`` itself; never
    descending through a link).  Returns the paths replaced."""
    replaced: list[str] = []
    top = os.fspath(root)
    if os.path.islink(top) or not os.path.isdir(top):
        return replaced
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and defuse_link(path, boundary):
                replaced.append(path)
    return replaced
