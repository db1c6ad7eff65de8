"""Tests for pytest_evalrun.filewrite: the one atomic file writer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pytest_evalrun.filewrite import FILE_MODE, write_bytes_atomic


def test_new_directories_modes_links(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c.txt"
    write_bytes_atomic(deep, b"one")  # the directories are made
    assert deep.read_bytes() == b"one"
    assert stat.S_IMODE(deep.stat().st_mode) == FILE_MODE
    write_bytes_atomic(deep, b"two", mode=0o755)
    assert deep.read_bytes() == b"two" and stat.S_IMODE(deep.stat().st_mode) == 0o755
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"kept")
    link = tmp_path / "a" / "link.txt"
    link.symlink_to(outside)
    write_bytes_atomic(link, b"new")  # the link is replaced, never followed
    assert not link.is_symlink() and link.read_bytes() == b"new"
    hard = tmp_path / "a" / "hard.txt"
    os.link(outside, hard)
    write_bytes_atomic(hard, b"new")  # a hard link is never written through
    assert outside.read_bytes() == b"kept" and hard.read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["c.txt"]  # no temp left
