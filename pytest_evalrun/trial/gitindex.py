"""Read and write git index files (the staging area, ``.git/index``), formats 2 and 3.

Used to give each trial workspace a correct index without running ``git add``: the entries
(mode, blob sha, path) of a fixture are read once from the index git wrote, and for every
further copy of the fixture an index is written with the copy's own stat data (ctime, mtime,
device, inode, uid, gid, size), exactly as ``git add`` would have written it, so that git sees
the copy as clean without re-reading a file. Extensions (the cached tree and others) are
optional in the format and are not written.

Format: https://git-scm.com/docs/index-format
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["IndexEntry", "build_index", "index_stat_data", "parse_index", "stat_data"]

_HEADER = struct.Struct(">4sLL")
# ctime s, ctime ns, mtime s, mtime ns, dev, ino, mode, uid, gid, size, sha-1, flags
_ENTRY = struct.Struct(">10L20sH")
_NAME_MASK = 0x0FFF
_EXTENDED = 0x4000
_STAGE_MASK = 0x3000
_U32 = 0xFFFFFFFF
_NS = 1_000_000_000


class IndexEntry(NamedTuple):
    """One stage-0 entry: git's mode (0o100644, 0o100755, 0o120000, ...), sha-1, path."""

    mode: int
    sha: bytes
    path: bytes


def parse_index(data: bytes) -> list[IndexEntry] | None:
    """The entries of an index file, or None when it is not a plain version 2/3 index of
    stage-0 entries with SHA-1 names (anything else: the caller falls back to git)."""
    records = _records(data)
    if records is None:
        return None
    return [IndexEntry(fields[6], fields[10], path) for fields, path in records]


def index_stat_data(data: bytes) -> dict[bytes, tuple[int, ...]] | None:
    """Each path's stat data as the index holds them (ctime s, ctime ns, mtime s, mtime ns,
    device, inode, mode, uid, gid, size: the form :func:`stat_data` gives), or None when the
    index is not a plain one (as :func:`parse_index`) or an entry has extended flags
    (intent-to-add, skip-worktree)."""
    records = _records(data, extended=False)
    if records is None:
        return None
    return {path: fields[:10] for fields, path in records}


def stat_data(st: os.stat_result) -> tuple[int, ...] | None:
    """``os.lstat`` of a work-tree file as an index entry records it (None: not a regular
    file or a symlink, which an index entry cannot be)."""
    if stat.S_ISREG(st.st_mode):
        mode = 0o100755 if st.st_mode & stat.S_IXUSR else 0o100644
    elif stat.S_ISLNK(st.st_mode):
        mode = 0o120000
    else:
        return None
    return _entry_stat(st, mode)


def _entry_stat(st: os.stat_result, mode: int) -> tuple[int, ...]:
    """The ten stat fields of an index entry (times, device, inode, ``mode``, owner, size), as
    the index stores them (32-bit)."""
    ctime, mtime = st.st_ctime_ns, st.st_mtime_ns
    return (
        (ctime // _NS) & _U32,
        ctime % _NS,
        (mtime // _NS) & _U32,
        mtime % _NS,
        st.st_dev & _U32,
        st.st_ino & _U32,
        mode,
        st.st_uid & _U32,
        st.st_gid & _U32,
        st.st_size & _U32,
    )


def _records(data: bytes, extended: bool = True) -> list[tuple[tuple[Any, ...], bytes]] | None:
    """(the entry's fixed fields, its path) of every entry; None when the index is not a
    plain version 2/3 one of stage-0 entries (or, ``extended`` False, has extended flags)."""
    if len(data) < _HEADER.size + 20 or hashlib.sha1(data[:-20]).digest() != data[-20:]:
        return None
    signature, version, count = _HEADER.unpack_from(data)
    if signature != b"DIRC" or version not in (2, 3):
        return None
    records: list[tuple[tuple[Any, ...], bytes]] = []
    pos = _HEADER.size
    end = len(data) - 20
    for _ in range(count):
        if pos + _ENTRY.size > end:
            return None
        fields = _ENTRY.unpack_from(data, pos)
        flags = fields[11]
        start = pos + _ENTRY.size
        if flags & _STAGE_MASK:
            return None  # a conflicted index: not a fixture snapshot
        if flags & _EXTENDED:
            if version < 3 or not extended:
                return None
            start += 2
        length = flags & _NAME_MASK
        if length == _NAME_MASK:
            length = data.index(b"\0", start) - start
        path = data[start : start + length]
        records.append((fields, path))
        # entries are padded with 1 to 8 NULs to a multiple of 8 bytes
        size = start - pos + length
        pos += (size + 8) & ~7
    return records


def build_index(entries: Sequence[IndexEntry], stats: Mapping[bytes, os.stat_result]) -> bytes:
    """An index file (version 2) of ``entries`` (sorted by path, as git keeps them) with the
    stat data of ``stats[path]`` (``os.lstat`` of each file in the work tree).

    Raises KeyError when a path has no stat.
    """
    parts = [_HEADER.pack(b"DIRC", 2, len(entries))]
    pack = _ENTRY.pack
    for entry in entries:
        head = pack(*_entry_stat(stats[entry.path], entry.mode), entry.sha,
                    min(len(entry.path), _NAME_MASK))
        record = head + entry.path
        parts.append(record + b"\0" * (8 - len(record) % 8))
    body = b"".join(parts)
    return body + hashlib.sha1(body).digest()
