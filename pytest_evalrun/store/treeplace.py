"""Directory trees placed elsewhere for ``evalrun merge`` (:mod:`.merge`): moved (one rename
each) or linked (files hard-linked, else copied; links re-made, never followed), by GNU ``cp``
in a few processes where there is one, else in Python."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: Trial directories per ``cp`` process (well under the argument-length limit).
_CP_BATCH = 500


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src``: files hard-linked (else copied), links re-made."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as entries:
        for entry in entries:
            target = dst / entry.name
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                if not os.path.lexists(target):
                    os.symlink(os.readlink(entry.path), target)
            elif stat.S_ISDIR(mode):
                _link_tree(Path(entry.path), target)
            elif stat.S_ISREG(mode) and not os.path.lexists(target):
                try:
                    os.link(entry.path, target)
                except OSError:
                    shutil.copy2(entry.path, target, follow_symlinks=False)


@functools.lru_cache(maxsize=1)
def _gnu_cp() -> str | None:
    """GNU cp, which links whole trees in one process (``cp -al``); None elsewhere (macOS)."""
    cp = shutil.which("cp")
    if cp is None:
        return None
    try:
        version = subprocess.run([cp, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return cp if "GNU coreutils" in version.stdout else None


def link_trees(base: Path, names: Sequence[str], dest: Path) -> None:
    """``dest/<name>`` becomes a copy of ``base/<name>`` for each name (relative paths, kept
    as they are): files hard-linked, links re-made, never followed. GNU cp does it in a few
    processes; elsewhere :func:`_link_tree` does it in Python."""
    cp = _gnu_cp()
    if cp is None:
        for name in names:
            _link_tree(base / name, dest / name)
        return
    dest.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(names), _CP_BATCH):
        batch = list(names[start : start + _CP_BATCH])
        done = subprocess.run(
            [cp, "-a", "-l", "--no-clobber", "--parents", "-t", str(dest), "--", *batch],
            cwd=base,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:  # e.g. across file systems: copy what is left in Python
            for name in batch:
                _link_tree(base / name, dest / name)


def place(base: Path, names: Sequence[str], dest: Path, keep: bool) -> None:
    """``dest/<name>`` for each ``base/<name>``: moved (one rename; linked instead across
    file systems, leaving the source as it is) or, with ``keep``, linked
    (:func:`link_trees`)."""
    if keep:
        link_trees(base, names, dest)
        return
    left = []
    made: set[str] = set()
    src, dst = str(base), str(dest)
    for name in names:
        target = f"{dst}/{name}"
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        try:
            os.rename(f"{src}/{name}", target)
        except OSError:
            left.append(name)
    link_trees(base, left, dest)
