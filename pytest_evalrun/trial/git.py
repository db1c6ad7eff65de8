"""Git primitives for trial workspaces: an isolated git process, and the few repository files
(empty repository, commit object, refs) written directly because a git process per file costs
more than the file.

Every git process runs isolated from the user's configuration: ``GIT_CONFIG_NOSYSTEM=1``,
``GIT_CONFIG_GLOBAL=/dev/null``, every inherited ``GIT_*`` variable removed, fixed identity and
dates (so the same fixture always gives the same snapshot sha), no hooks, no signing, no
fsmonitor, no user excludes.

Every git process is bounded (:func:`run_git`): in time (``timeout``, default
:data:`GIT_TIMEOUT`; killed and reported as exit status 124 past it), in the output kept
(``max_output``: the rest is read and counted, never held), and in memory
(``core.bigFileThreshold`` so big files are streamed, never delta-compressed in memory, and an
address-space limit of :data:`GIT_MEMORY` on Linux).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

from ..filewrite import write_bytes_atomic

__all__ = [
    "GIT_MEMORY",
    "GIT_TIMEOUT",
    "GitError",
    "GitResult",
    "git_env",
    "git_executable",
    "is_sha",
    "read_loose_objects",
    "resolve_ref",
    "run_git",
    "write_commit",
    "write_empty_repo",
    "write_minimal_repo",
    "write_pack",
    "write_ref",
]

IDENTITY_NAME = "pytest-evalrun"
IDENTITY_EMAIL = "evalrun@localhost"
_FIXED_DATE = "2000-01-01T00:00:00+0000"
_FIXED_EPOCH = 946684800  # _FIXED_DATE in seconds
MESSAGE = "evalrun: fixture snapshot"

_REPO_CONFIG = (
    "[core]\n"
    "\trepositoryformatversion = 0\n"
    "\tfilemode = true\n"
    "\tbare = false\n"
    "\tlogallrefupdates = true\n"
)
# Options for every git call: no hooks, no signing, no user excludes, no fsmonitor, no pager.
_GIT_OPTIONS = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.excludesFile=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.quotePath=false",
    "-c",
    "advice.addEmbeddedRepo=false",
    "-c",
    "core.bigFileThreshold=1m",
)
#: Seconds a git call may take before it is killed.
GIT_TIMEOUT = 120.0
#: Address-space limit of a git process (bytes), where ``prlimit`` exists.
GIT_MEMORY = 2 * 1024**3
_STDERR_KEPT = 64 * 1024


class GitError(Exception):
    """git is missing, or a repository could not be written."""


def git_executable() -> str:
    """Absolute path of ``git`` on PATH; :class:`GitError` when there is none."""
    git = shutil.which("git")
    if git is None:
        raise GitError(
            "git was not found on PATH; pytest-evalrun needs git to snapshot trial workspaces"
            f" (PATH={os.environ.get('PATH', '')})"
        )
    return git


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git process: the caller's, minus ``GIT_*``, plus isolation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=IDENTITY_NAME,
        GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_AUTHOR_DATE=_FIXED_DATE,
        GIT_COMMITTER_NAME=IDENTITY_NAME,
        GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_DATE=_FIXED_DATE,
        LC_ALL="C",
    )
    if extra:
        env.update(extra)
    return env


class GitResult:
    """What a bounded git call did: ``returncode`` (124 after a timeout), ``stdout`` (at most
    ``max_output`` bytes), ``stdout_cut`` (bytes read past that and dropped), ``stderr`` (its
    first 64 KiB), ``timed_out``."""

    __slots__ = ("returncode", "stderr", "stdout", "stdout_cut", "timed_out")

    def __init__(
        self, returncode: int, stdout: bytes, stderr: bytes, cut: int, timed_out: bool
    ) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_cut = cut
        self.timed_out = timed_out


def _limit_memory(pid: int, limit: int | None) -> None:
    """Best effort: set the address-space limit of a just-started process (Linux)."""
    if limit is None or not sys.platform.startswith("linux"):
        return
    import resource

    with contextlib.suppress(OSError, ValueError, AttributeError):
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))


def run_git(
    git: str,
    args: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    input: bytes | None = None,
    timeout: float | None = GIT_TIMEOUT,
    max_output: int | None = None,
    memory: int | None = GIT_MEMORY,
) -> GitResult:
    """Run git with our options, bounded in time, kept output and memory (see the module
    docstring).  Never raises for git's own failures; :class:`OSError` when git cannot start."""
    with contextlib.ExitStack() as stack:
        stdin: int | object = subprocess.DEVNULL
        if input is not None:
            f = stack.enter_context(tempfile.TemporaryFile())
            f.write(input)
            f.seek(0)
            stdin = f
        err = stack.enter_context(tempfile.TemporaryFile())
        proc = subprocess.Popen(
            [git, *_GIT_OPTIONS, *args],
            cwd=cwd,
            env=env,
            stdin=stdin,  # type: ignore[arg-type]
            stdout=subprocess.PIPE,
            stderr=err,
        )
        _limit_memory(proc.pid, memory)
        assert proc.stdout is not None
        kept: list[bytes] = []
        size = cut = 0
        timed_out = False
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        try:
            while True:
                wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
                if wait == 0.0:
                    timed_out = True
                    break
                if not poller.poll(-1 if wait == -1 else max(1, int(wait * 1000))):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                room = len(chunk) if max_output is None else max(0, max_output - size)
                if room:
                    kept.append(chunk[:room])
                    size += min(room, len(chunk))
                cut += len(chunk) - min(room, len(chunk))
        finally:
            if timed_out:
                proc.kill()
            proc.stdout.close()
            code = proc.wait()
        err.seek(0)
        stderr = err.read(_STDERR_KEPT)
        if timed_out:
            code = 124
            stderr += f"\ngit timed out after {timeout:g}s and was killed".encode()
        return GitResult(code, b"".join(kept), stderr, cut, timed_out)


def write_empty_repo(git_dir: Path) -> None:
    """What ``git init --template=`` writes, without the cost of a git process."""
    (git_dir / "objects").mkdir(parents=True, exist_ok=True)
    (git_dir / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    (git_dir / "refs" / "tags").mkdir(exist_ok=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    (git_dir / "config").write_text(_REPO_CONFIG)


def write_minimal_repo(git_dir: Path, refs: Mapping[str, str]) -> None:
    """The fewest files git accepts as a repository (``HEAD``, ``config``, ``refs/``,
    ``objects/pack/``), with ``refs`` (name -> sha) in ``packed-refs``."""
    (git_dir / "objects" / "pack").mkdir(parents=True, exist_ok=True)
    (git_dir / "refs").mkdir(exist_ok=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    (git_dir / "config").write_text(_REPO_CONFIG)
    lines = ["# pack-refs with: peeled fully-peeled sorted \n"]
    lines += [f"{sha} {name}\n" for name, sha in sorted(refs.items())]
    (git_dir / "packed-refs").write_text("".join(lines))


def write_ref(git_dir: Path, ref: str, sha: str) -> None:
    ref_file = git_dir / ref
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    ref_file.write_text(sha + "\n")


def write_commit(git_dir: Path, tree_sha: str) -> str:
    """Write the snapshot commit of ``tree_sha`` as a loose object; return its sha.

    Equivalent to ``git commit-tree`` with our fixed identity and date, without a process
    (``git commit`` costs ~7 ms here, this ~0.1 ms).
    """
    who = f"{IDENTITY_NAME} <{IDENTITY_EMAIL}> {_FIXED_EPOCH} +0000"
    body = f"tree {tree_sha}\nauthor {who}\ncommitter {who}\n\n{MESSAGE}\n".encode()
    raw = b"commit %d\0" % len(body) + body
    sha = hashlib.sha1(raw).hexdigest()
    obj_dir = git_dir / "objects" / sha[:2]
    obj_dir.mkdir(exist_ok=True)
    obj = obj_dir / sha[2:]
    if not obj.exists():
        write_bytes_atomic(obj, zlib.compress(raw, 1), mode=0o444)
    return sha


def is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def resolve_ref(git_dir: Path, ref: str) -> str | None:
    """Sha of ``ref`` from a loose ref file or packed-refs, following symrefs."""
    for _ in range(5):
        try:
            text = (git_dir / ref).read_text().strip()
        except OSError:
            text = ""
        if text.startswith("ref: "):
            ref = text[5:].strip()
            continue
        if is_sha(text):
            return text
        try:
            packed = (git_dir / "packed-refs").read_text()
        except OSError:
            return None
        for line in packed.splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and is_sha(sha):
                return sha
        return None
    return None


_OBJECT_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3, b"tag": 4}


def read_loose_objects(git_dir: Path) -> list[tuple[bytes, int, bytes]] | None:
    """Every loose object of a repository as (sha-1, pack type, content); None when one
    cannot be read."""
    objects: list[tuple[bytes, int, bytes]] = []
    root = git_dir / "objects"
    for sub in root.iterdir():
        if len(sub.name) != 2 or not sub.is_dir():
            continue
        for obj in sub.iterdir():
            try:
                raw = zlib.decompress(obj.read_bytes())
            except (OSError, zlib.error):
                return None
            header, _, content = raw.partition(b"\0")
            kind, _, size = header.partition(b" ")
            if kind not in _OBJECT_TYPES or int(size) != len(content):
                return None
            sha = hashlib.sha1(raw).digest()
            if sha.hex() != sub.name + obj.name:
                return None
            objects.append((sha, _OBJECT_TYPES[kind], content))
    return objects


def write_pack(objects: list[tuple[bytes, int, bytes]], directory: Path) -> tuple[Path, Path]:
    """Write ``objects`` as one pack (version 2, no deltas) and its index (version 2) in
    ``directory``, named as git names them; return (pack, idx).

    What ``git pack-objects`` writes, without a process: a fixture's objects in two files that
    are cheap to copy into every workspace.
    """
    parts = [struct.pack(">4sLL", b"PACK", 2, len(objects))]
    offsets: dict[bytes, tuple[int, int]] = {}
    pos = 12
    for sha, kind, content in objects:
        size = len(content)
        header = bytearray()
        byte = (kind << 4) | (size & 0x0F)
        size >>= 4
        while size:
            header.append(byte | 0x80)
            byte = size & 0x7F
            size >>= 7
        header.append(byte)
        entry = bytes(header) + zlib.compress(content, 1)
        offsets[sha] = (pos, zlib.crc32(entry))
        parts.append(entry)
        pos += len(entry)
    if pos >= 1 << 31:
        raise ValueError("pack too large for 32-bit offsets")
    body = b"".join(parts)
    pack_sha = hashlib.sha1(body).digest()
    names = sorted(offsets)
    fanout = [0] * 256
    for sha in names:
        fanout[sha[0]] += 1
    total = 0
    for i in range(256):
        total += fanout[i]
        fanout[i] = total
    idx = b"".join(
        [
            b"\377tOc",
            struct.pack(">L", 2),
            struct.pack(">256L", *fanout),
            *names,
            *(struct.pack(">L", offsets[s][1]) for s in names),
            *(struct.pack(">L", offsets[s][0]) for s in names),
            pack_sha,
        ]
    )
    idx += hashlib.sha1(idx).digest()
    pack_path = directory / f"pack-{pack_sha.hex()}.pack"
    idx_path = directory / f"pack-{pack_sha.hex()}.idx"
    pack_path.write_bytes(body + pack_sha)
    idx_path.write_bytes(idx)
    return pack_path, idx_path
