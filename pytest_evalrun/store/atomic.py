"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Write to a temporary file in the same directory, then ``os.replace`` it over the target: whatever
process is killed when, the file is whole. ``fsync=True`` also survives a power cut (used for
run.json and summaries, not for the per-trial files, where it cost a quarter of a trial's time).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of the files we write: what ``open()`` would give (mkstemp alone gives 0600).
FILE_MODE = 0o666 & ~_umask()


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False, default=str) + "\n"


def write_json_atomic(path: Path, obj: Any, *, fsync: bool = False) -> None:
    write_text_atomic(path, dumps(obj), fsync=fsync)


def read_json(path: Path | str) -> Any:
    """The file's JSON value (UTF-8); OSError or ValueError when it cannot be read."""
    with open(path, "rb") as fh:
        return json.loads(fh.read())
