"""The one atomic file writer: a reader sees the old file or the new one, never a torn one.

Write to a temporary file in the same directory, then ``os.replace`` it over the target:
whatever process is killed when, the file is whole. The new file gets ``mode`` (the mode of
the file it replaces, when a writer keeps it: a masked script stays executable), else what
``open()`` would give (:data:`FILE_MODE`; ``mkstemp`` alone gives 0600). A hard link to a file
elsewhere is never written through and a symlink at ``path`` is replaced, never followed.

:mod:`pytest_evalrun.store.atomic` builds the text and JSON writers on it; :mod:`.secrets`
masks files with it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of the files we write: what ``open()`` would give (mkstemp alone gives 0600).
FILE_MODE = 0o666 & ~_umask()


def write_bytes_atomic(
    path: Path, data: bytes, *, fsync: bool = False, mode: int | None = None
) -> None:
    """Replace ``path`` with a file holding ``data`` (mode ``mode``, else :data:`FILE_MODE`);
    ``fsync=True`` also survives a power cut."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError:  # the directory first (not before every write: a system call)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE if mode is None else mode)
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
