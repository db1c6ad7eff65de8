"""Showing a standard-layout file in the Pier tree without copying it.

A hard link (same inode, no extra space), else a relative symlink, else a copy; an existing
destination is unlinked first, never written through (that would change a hard-linked source).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Literal

from ..linksafe import defuse_link

LinkMode = Literal["auto", "hardlink", "symlink", "copy"]


def link_file(src: Path, dst: Path, mode: LinkMode = "auto") -> str:
    """Make ``dst`` show ``src``'s content without duplicating it when possible.

    ``auto``: a hard link (same filesystem), else a relative symlink, else a copy. Returns the
    method used: ``"hardlink"``, ``"symlink"`` or ``"copy"``. An existing ``dst`` is replaced
    (unlinked first: never written through, which would change a hard-linked source).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            dst.unlink()
    if mode in ("auto", "hardlink"):
        try:
            os.link(src, dst)
            return "hardlink"
        except (OSError, NotImplementedError):
            if mode == "hardlink":
                raise
    if mode in ("auto", "symlink"):
        try:
            try:
                target = os.path.relpath(src.resolve(), dst.parent.resolve())
            except ValueError:  # another drive on Windows
                target = str(src.resolve())
            os.symlink(target, dst)
            return "symlink"
        except (OSError, NotImplementedError):
            if mode == "symlink":
                raise
    shutil.copy2(src, dst)
    return "copy"


def mirror_tree(src: Path, dst: Path, mode: LinkMode, skip: frozenset[str] = frozenset()) -> None:
    """Link every regular file of ``src`` into ``dst`` (same relative paths).

    Symlinks the agent left are recreated as symlinks with the same target (never followed,
    so nothing outside the trial is pulled in) when they resolve inside ``dst``'s parent (the
    trial's directory), else replaced by a text file naming the target
    (:mod:`pytest_evalrun.store.linksafe`); names in ``skip`` (top level only) are left out.
    A ``src`` that is itself a symlink is not mirrored at all.
    """
    if src.is_symlink():
        return
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        for name in list(dirs):
            path = Path(root) / name
            if path.is_symlink():
                dirs.remove(name)
                files.append(name)
        for name in files:
            source = Path(root) / name
            target = dst / rel / name
            if source.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError, NotImplementedError):
                    if target.is_symlink() or target.exists():
                        target.unlink()
                    os.symlink(os.readlink(source), target)
                    defuse_link(target, dst.parent)
                continue
            if source.is_file():
                link_file(source, target, mode)
