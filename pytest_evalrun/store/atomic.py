"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

The bytes writer is :func:`pytest_evalrun.filewrite.write_bytes_atomic` (the one atomic writer,
also used to mask secrets); this module adds text and JSON on it. ``fsync=True`` also survives
a power cut (used for run.json and summaries, not for the per-trial files, where it cost a
quarter of a trial's time).

Every JSON file is strict JSON (:func:`dumps`): a NaN or an infinity (not JSON, and refused by
Harbor, jq, JavaScript) is written as ``null``, so writing never fails on an odd value.

Reading what an agent left (:func:`read_regular`): a regular file only (never a FIFO, device or
socket, which would block or never end), never through a symlink, and at most ``limit`` bytes.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from ..filewrite import FILE_MODE as _FILE_MODE
from ..filewrite import write_bytes_atomic as write_bytes_atomic

#: Mode of the files we write (re-exported: :mod:`pytest_evalrun.filewrite` has the writer).
FILE_MODE = _FILE_MODE


def write_bytes_if_changed(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """:func:`write_bytes_atomic`, unless the file already holds exactly ``data``."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_bytes_atomic(path, data, fsync=fsync)


def write_text_atomic(path: Path, text: str, *, fsync: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def finite(obj: Any) -> Any:
    """``obj`` with every NaN and infinity (at any depth) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def strict_dumps(obj: Any, **options: Any) -> str:
    """``json.dumps`` that never writes NaN or Infinity: such values become null."""
    try:
        return json.dumps(obj, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(obj), allow_nan=False, **options)


def dumps(obj: Any) -> str:
    return strict_dumps(obj, indent=2, ensure_ascii=False, sort_keys=False, default=str) + "\n"


def write_json_atomic(path: Path, obj: Any, *, fsync: bool = False) -> None:
    write_text_atomic(path, dumps(obj), fsync=fsync)


def load_json(path: Path | str) -> Any:
    """The file's JSON value (UTF-8); OSError or ValueError when it cannot be read."""
    with open(path, "rb") as fh:
        return json.loads(fh.read())


class NotRegularFile(OSError):
    """The path is a FIFO, device, socket, directory or symlink, not a regular file."""


class TooLarge(OSError):
    """The file is larger than the reader's limit."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: Path | str, limit: int) -> bytes:
    """The bytes of ``path`` when it is a regular file (not a symlink) of at most ``limit``
    bytes; :class:`NotRegularFile`, :class:`TooLarge` or another OSError otherwise. Never
    blocks: a FIFO is opened non-blocking and refused (lstat before, fstat after the open)."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(f"{path} is {_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise TooLarge(f"{path} has {st.st_size} bytes, more than {limit}")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} has more than {limit} bytes")
    return data
