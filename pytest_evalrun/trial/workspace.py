"""Trial workspaces: copy a fixture, snapshot it with git, diff the agent's change against it.

:func:`prepare_workspace` copies the fixture (symlinks kept as symlinks, permission bits kept,
any ``.git`` and any special file left out) and commits it to a fresh repository in
``<workspace>/.git``, so the agent finds a clean git checkout.  The snapshot commit's sha is
also stored in the ref ``refs/evalrun/snapshot``.

:func:`workspace_diff` diffs the workspace as it is now (tracked, new, deleted and binary files)
against that snapshot commit, whatever the agent did to the repository meanwhile (commits,
resets, index changes, config changes).  It changes nothing in the workspace: it runs git with
a git directory of its own (one per process, see :class:`_Scratch`), whose index and new
objects live there too; the workspace's objects are only read (as an alternate object store).
Because the workspace's ``.git/config``, ``.git/info`` and ``.git/index`` are never read, an
agent cannot make our git run its commands (``core.fsmonitor``, filter drivers, hooks) or hide
files through ``.git/info/exclude``. ``.gitignore`` files in the tree are honoured, for the
snapshot and for the diff alike.

Speed: the first time a process snapshots a fixture it runs git (``add -A``, ``write-tree``;
the commit object and refs are written directly) and keeps the result, the objects and the
index entries, in its scratch directory.  Every further copy of the same fixture (same paths,
modes, sizes, mtimes, ctimes and inodes: the checks git itself relies on) gets those objects
copied and an index written in Python with the copy's own stat data: no git process at all.
The diff runs three git processes (``status``, ``add -A``, ``diff --cached``); its index starts
from the workspace's index as it was right after the copy (kept in memory, out of the agent's
reach), so ``add -A`` only reads the files whose stat data changed.  A workspace the agent left
untouched (every indexed file with the exact stat data its index holds, none racily clean,
nothing else in the work tree: :func:`_untouched`) gets its empty diff with no git process.

Limits (:class:`DiffLimits`): a new or changed file larger than ``max_file_bytes`` is left out
of the diff (found with ``git ls-files --others --modified`` and excluded from ``git add``, so
git never reads it) and named in a ``# evalrun:`` note at the top; the diff is cut at
``max_diff_bytes`` with a ``[... N bytes left out ...]`` marker; every git call has a timeout
and a memory limit (:func:`pytest_evalrun.trial.git.run_git`).  Given a redactor, a binary
patch (which git writes compressed, where masking cannot see) is left out, with a note, when
the file's content holds a secret.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import itertools
import os
import re
import shutil
import stat
import tempfile
import threading
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import git as g
from .gitindex import IndexEntry, build_index, index_stat_data, parse_index, stat_data

if TYPE_CHECKING:
    from ..secrets import Redactor

__all__ = [
    "DEFAULT_DIFF_LIMITS",
    "SNAPSHOT_REF",
    "DiffLimits",
    "Snapshot",
    "WorkspaceError",
    "conftest_blobs",
    "prepare_workspace",
    "read_snapshot",
    "release_snapshot",
    "remove_session_templates",
    "session_templates",
    "snapshot_after_setup",
    "workspace_diff",
    "workspace_diff_bytes",
]

SNAPSHOT_REF = "refs/evalrun/snapshot"
_HEADS_MAIN = "refs/heads/main"


@dataclass(frozen=True)
class DiffLimits:
    """Bounds of one workspace diff: files over ``max_file_bytes`` are left out (named),
    the diff is cut at ``max_diff_bytes``, each git call killed after ``timeout`` seconds."""

    max_file_bytes: int = 10 * 1024 * 1024
    max_diff_bytes: int = 20 * 1024 * 1024
    timeout: float = g.GIT_TIMEOUT


DEFAULT_DIFF_LIMITS = DiffLimits()


class WorkspaceError(Exception):
    """The workspace could not be prepared (no git, missing fixture, copy or git failure)."""


@dataclass(frozen=True)
class Snapshot:
    """The fixture snapshot of a workspace.

    ``sha`` is the snapshot commit (or, after :func:`snapshot_after_setup`, tree); ``index`` is
    the index of the workspace as snapshotted and ``index_mtime_ns`` the time it was written
    (git's "racy" timestamp); the diff starts from them.  ``objects``: object directories
    outside the workspace that hold the snapshot (the fixture's template, the setup's
    baseline), the only ones the diff reads: the agent cannot rewrite the "before".
    """

    sha: str
    index: bytes | None = None
    index_mtime_ns: int = 0
    objects: tuple[str, ...] = ()


# -- the per-process scratch directory -------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    sha: str
    entries: list[IndexEntry]
    packs: tuple[Path, ...]  # the snapshot's objects: objects/pack/pack-<sha>.idx and .pack

    @property
    def objects(self) -> str:
        """The template's object directory (outside every workspace)."""
        return str(self.packs[0].parent.parent)


class _Scratch:
    """A temporary directory per process (the diff's git directory, and the fixture
    templates when no session shares its own), and the templates loaded in this process.

    ``$TMPDIR/evalrun-git-<pid>-*``: created on first use, removed when the process exits; a
    killed process's directory is removed by the next process that creates one.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None
        #: templates loaded, by their directory
        self.templates: dict[str, _Template] = {}
        self.lock = threading.Lock()

    def directory(self) -> Path:
        if self._dir is None or not self._dir.is_dir():
            _remove_orphans()
            self._dir = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
            weakref.finalize(self, _remove_if_owner, str(self._dir), os.getpid())
        return self._dir

    def diff_git_dir(self) -> Path:
        shadow = self.directory() / "diff.git"
        if not (shadow / "HEAD").is_file():
            g.write_empty_repo(shadow)
            # Bytecode caches the fixture does not track are no part of the agent's change.
            (shadow / "info").mkdir(exist_ok=True)
            (shadow / "info" / "exclude").write_text("".join(f"{p}\n" for p in _BYTECODE))
        return shadow


_PREFIX = "evalrun-git-"
_BYTECODE = ("__pycache__/", "*.pyc", "*.pyo")


def _remove_if_owner(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child
        shutil.rmtree(path, ignore_errors=True)


def _remove_orphans() -> None:
    """Remove the scratch directories of processes that were killed (no exit handler ran)."""
    root = Path(tempfile.gettempdir())
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(_PREFIX)]
    except OSError:
        return
    for path in candidates:
        pid = path.name[len(_PREFIX) :].partition("-")[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue  # alive (or not ours to signal): leave it


_SCRATCH = _Scratch()


# -- the fixture copy ------------------------------------------------------------------------


def _copy_tree(
    src: str, dst: str, rel: bytes, signature: list[object], stats: dict[bytes, os.stat_result]
) -> None:
    """Copy ``src`` into ``dst`` like ``shutil.copytree(symlinks=True)`` without ``.git``;
    record each source entry in ``signature`` and each copied file's lstat in ``stats``."""
    os.makedirs(dst, exist_ok=True)
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name == ".git":
            # A fixture's own repository (or a nested one, which git would record as an opaque
            # gitlink) is never copied: the snapshot repository must see the files themselves.
            continue
        st = entry.stat(follow_symlinks=False)
        target = os.path.join(dst, entry.name)
        path = rel + os.fsencode(entry.name)
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(entry.path)
            os.symlink(link, target)
            signature.append((path, "l", link))
        elif stat.S_ISDIR(st.st_mode):
            signature.append((path, "d", st.st_mode))
            _copy_tree(entry.path, target, path + b"/", signature, stats)
            continue
        elif stat.S_ISREG(st.st_mode):
            shutil.copy2(entry.path, target, follow_symlinks=False)
            signature.append(
                (path, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            )
        else:
            continue  # sockets, fifos, devices: nothing git could snapshot
        stats[path] = os.lstat(target)
    shutil.copystat(src, dst)


def _copy_fixture(fixture: Path | None, workspace: Path) -> tuple[str, dict[bytes, os.stat_result]]:
    """Copy the fixture; return (the fixture's cache key, lstat of every copied file)."""
    stats: dict[bytes, os.stat_result] = {}
    if fixture is None:
        workspace.mkdir(parents=True, exist_ok=True)
        return "empty", stats
    if not fixture.is_dir():
        raise WorkspaceError(f"fixture directory not found: {fixture}")
    signature: list[object] = [os.path.realpath(fixture)]
    _copy_tree(str(fixture), str(workspace), b"", signature, stats)
    return hashlib.sha1(repr(signature).encode()).hexdigest(), stats


# -- snapshots -------------------------------------------------------------------------------


def prepare_workspace(
    fixture: Path | None, workspace: Path, *, templates: Path | None = None
) -> Snapshot:
    """Copy ``fixture`` into ``workspace`` (or create it empty) and snapshot it with git.

    Returns the snapshot (its commit sha is also in ``refs/evalrun/snapshot``).  Raises
    :class:`WorkspaceError` with a readable message when git is missing, the fixture does not
    exist or cannot be copied, or git fails.

    ``templates`` is the directory of fixture templates, shared by every process of a session
    (see :func:`session_templates`); by default, one of this process's own.
    """
    try:
        git = g.git_executable()
    except g.GitError as exc:
        raise WorkspaceError(str(exc)) from None
    workspace = Path(workspace)
    try:
        key, stats = _copy_fixture(None if fixture is None else Path(fixture), workspace)
    except WorkspaceError:
        raise
    except (OSError, shutil.Error) as exc:
        raise WorkspaceError(f"cannot copy fixture {fixture} to {workspace}: {exc}") from exc
    git_dir = workspace / ".git"
    store = templates if templates is not None else _SCRATCH.directory() / "templates"
    try:
        template = _load_template(store, key)
        if template is not None:
            try:
                return _from_template(template, git_dir, stats)
            except (KeyError, OSError):  # e.g. its directory was removed: use git below
                with _SCRATCH.lock:
                    _SCRATCH.templates.pop(str(store / key), None)
                shutil.rmtree(git_dir, ignore_errors=True)
        snapshot = _snapshot_with_git(git, workspace)
        with contextlib.suppress(OSError, ValueError):  # a template is only a shortcut
            _save_template(store, key, snapshot, git_dir)
        template = _load_template(store, key)
        if template is not None and template.sha == snapshot.sha:
            return dataclasses.replace(snapshot, objects=(template.objects,))
        return dataclasses.replace(snapshot, objects=(_private_objects(git_dir, snapshot.sha),))
    except OSError as exc:
        raise WorkspaceError(f"cannot write the snapshot repository in {workspace}: {exc}") from exc


def _snapshot_with_git(git: str, workspace: Path) -> Snapshot:
    git_dir = workspace / ".git"
    g.write_empty_repo(git_dir)
    env = g.git_env()
    add = g.run_git(git, ["add", "-A"], cwd=workspace, env=env)
    if add.returncode != 0:  # also after git's timeout (exit 124)
        raise WorkspaceError(_failure("git add -A", workspace, add.returncode, add.stderr))
    tree = g.run_git(git, ["write-tree"], cwd=workspace, env=env)
    tree_sha = tree.stdout.decode(errors="replace").strip()
    if tree.returncode != 0 or not g.is_sha(tree_sha):
        raise WorkspaceError(_failure("git write-tree", workspace, tree.returncode, tree.stderr))
    sha = g.write_commit(git_dir, tree_sha)
    for ref in (_HEADS_MAIN, SNAPSHOT_REF):
        g.write_ref(git_dir, ref, sha)
    index = git_dir / "index"
    return Snapshot(sha, index.read_bytes(), index.stat().st_mtime_ns)


def _private_objects(git_dir: Path, sha: str) -> str:
    """A copy of a fresh snapshot's objects outside the workspace (when no template holds
    them), in this process's scratch directory."""
    target = _SCRATCH.directory() / f"objects-{sha}"
    if not target.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".objects-", dir=_SCRATCH.directory()))
        shutil.copytree(git_dir / "objects", tmp / "objects")
        with contextlib.suppress(OSError):  # made meanwhile by another thread: the same
            os.rename(tmp / "objects", target)
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _load_template(store: Path, key: str) -> _Template | None:
    """The template of fixture ``key`` in ``store``, if a process made one."""
    where = store / key
    with _SCRATCH.lock:
        template = _SCRATCH.templates.get(str(where))
    if template is not None or not (where / "sha").is_file():
        return template
    try:
        entries = parse_index((where / "index").read_bytes())
        sha = (where / "sha").read_text().strip()
        pack_dir = where / "objects" / "pack"
        packs = tuple(sorted(p for p in pack_dir.iterdir() if p.name.startswith("pack-")))
    except OSError:
        return None
    if entries is None or not g.is_sha(sha) or len(packs) != 2:
        return None
    template = _Template(sha, entries, packs)
    with _SCRATCH.lock:
        _SCRATCH.templates[str(where)] = template
    return template


def _save_template(store: Path, key: str, snapshot: Snapshot, git_dir: Path) -> None:
    """Keep a fresh snapshot as the template of its fixture: its objects in one pack, its
    index and its sha.  Made in a directory of its own and renamed into place, so that a
    process sees a whole template or none (when two make one at once, the first stays)."""
    where = store / key
    if where.exists() or snapshot.index is None or parse_index(snapshot.index) is None:
        return
    objects = g.read_loose_objects(git_dir)
    if objects is None:
        return
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=store))
    try:
        (tmp / "objects" / "pack").mkdir(parents=True)
        g.write_pack(objects, tmp / "objects" / "pack")
        (tmp / "index").write_bytes(snapshot.index)
        (tmp / "sha").write_text(snapshot.sha + "\n")
        os.rename(tmp, where)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process was first, or no space
        raise


def session_templates(session_id: str) -> Path:
    """Where the fixture templates of one session live (made on first use): removed by
    :func:`remove_session_templates`, or after a crash by the next process making a scratch
    directory."""
    return Path(tempfile.gettempdir()) / f"{_PREFIX}{os.getpid()}-s{session_id[:12]}"


def remove_session_templates(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with _SCRATCH.lock:
        for where in [w for w in _SCRATCH.templates if w.startswith(f"{path}{os.sep}")]:
            del _SCRATCH.templates[where]


def _from_template(
    template: _Template, git_dir: Path, stats: dict[bytes, os.stat_result]
) -> Snapshot:
    index_bytes = build_index(template.entries, stats)  # KeyError: a file is missing
    g.write_minimal_repo(git_dir, {_HEADS_MAIN: template.sha, SNAPSHOT_REF: template.sha})
    for pack in template.packs:
        target = git_dir / "objects" / "pack" / pack.name
        shutil.copyfile(pack, target)
        os.chmod(target, 0o444)
    index = git_dir / "index"
    index.write_bytes(index_bytes)
    return Snapshot(template.sha, index_bytes, index.stat().st_mtime_ns, (template.objects,))


def _failure(what: str, where: Path, code: int, stderr: bytes) -> str:
    detail = stderr.decode(errors="replace").strip()
    return f"{what} failed in {where} (exit {code}): {detail}"


def conftest_blobs(snapshot: Snapshot | None) -> list[tuple[str, str]]:
    """(path, blob sha) of every ``conftest.py`` of a snapshot: the conftest files the
    ``{pytest}`` placeholder may load from the workspace (trial/pytest_guard.py)."""
    if snapshot is None or snapshot.index is None:
        return []
    entries = parse_index(snapshot.index) or []
    return [
        (os.fsdecode(e.path), e.sha.hex())
        for e in entries
        if (e.path == b"conftest.py" or e.path.endswith(b"/conftest.py")) and e.mode != 0o120000
    ]


def read_snapshot(workspace: Path) -> str | None:
    """The snapshot sha recorded by :func:`prepare_workspace`, or None."""
    return g.resolve_ref(Path(workspace) / ".git", SNAPSHOT_REF)


# -- diffs -----------------------------------------------------------------------------------

_DIFF_ARGS = [
    "diff",
    "--cached",
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
]


def _note(text: str) -> bytes:
    return f"# evalrun: {text}\n".encode()


def workspace_diff_bytes(
    workspace: Path,
    snapshot: Snapshot | str | None = None,
    *,
    limits: DiffLimits = DEFAULT_DIFF_LIMITS,
    redactor: Redactor | None = None,
) -> bytes:
    """Like :func:`workspace_diff`, as the raw bytes git produced (plus our notes)."""
    workspace = Path(workspace)
    seed: Snapshot | None = snapshot if isinstance(snapshot, Snapshot) else None
    sha = snapshot.sha if isinstance(snapshot, Snapshot) else snapshot
    try:
        git_dir = workspace / ".git"
        if not workspace.is_dir():
            return _note(f"workspace {workspace} does not exist; no diff")
        if not (seed is not None and seed.objects) and not git_dir.is_dir():
            # (a Snapshot that names its objects needs nothing of the workspace's .git)
            return _note("the workspace's .git directory is gone (removed by the agent?); no diff")
        if sha is not None and (not sha or sha.startswith("-")):
            return _note(f"invalid snapshot {sha!r}; no diff")
        if sha is None:
            sha = read_snapshot(workspace)
            if sha is None:
                return _note(f"no snapshot commit ({SNAPSHOT_REF}) in the workspace; no diff")
        git = shutil.which("git")
        if git is None:
            return _note("git was not found on PATH; no diff")
        if seed is not None and _untouched(workspace, seed):
            return b""  # what git would say (see _untouched), without running it
        with _SCRATCH.lock:
            return _diff(git, workspace, sha, seed, limits, redactor)
    except Exception as exc:  # never let an odd workspace break the trial's report
        return _note(f"cannot diff the workspace: {type(exc).__name__}: {exc}")


def _untouched(workspace: Path, seed: Snapshot) -> bool:
    """Is the workspace exactly as the seed index records it, so that ``git add -A`` would
    stage nothing and the diff is empty? True only when every path of the index is there
    with the very stat data the index holds (ctime, mtime, device, inode, mode, uid, gid,
    size: all of what git compares, to the nanosecond) and none is racily clean (modified in
    the second the index was written or later, which git would re-read), and the work tree
    holds nothing else: no other file, link or special file, no empty directory, no ``.git``
    below the top (a nested repository).  Anything else (or any error) is False: git decides.
    The walk stops at the first difference, so a changed workspace costs little more."""
    if seed.index is None:
        return False
    expected = index_stat_data(seed.index)
    if expected is None:
        return False
    racy = seed.index_mtime_ns // 1_000_000_000
    # racily clean entries: git compares their content; a link's (its target) is compared
    # here too (a copied link is made at copy time), a file's is left to git
    links = {path for path, fields in expected.items() if fields[2] >= racy}
    if any(expected[path][6] != _LINK_MODE for path in links):
        return False
    blobs = dict(_racy_links(seed.index, links)) if links else {}
    seen = 0
    pending = [(os.fsencode(os.path.abspath(workspace)), b"")]
    try:
        while pending:
            directory, rel = pending.pop()
            empty = True
            with os.scandir(directory) as it:
                for entry in it:
                    empty = False
                    if entry.name == b".git":
                        if rel:
                            return False  # a nested repository
                        continue  # the workspace's own repository: not in the work tree
                    st = entry.stat(follow_symlinks=False)
                    path = rel + entry.name
                    if stat.S_ISDIR(st.st_mode):
                        pending.append((entry.path, path + b"/"))
                        continue
                    fields = expected.get(path)
                    if fields is None or fields != stat_data(st):
                        return False
                    if path in blobs and _blob_sha(os.readlink(entry.path)) != blobs[path]:
                        return False
                    seen += 1
            if empty and rel:
                return False
    except OSError:
        return False
    return seen == len(expected)


_LINK_MODE = 0o120000


def _racy_links(index: bytes, paths: set[bytes]) -> list[tuple[bytes, bytes]]:
    """(path, blob sha) of the index entries at ``paths``."""
    return [(e.path, e.sha) for e in parse_index(index) or () if e.path in paths]


def _blob_sha(content: bytes) -> bytes:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).digest()


@dataclass
class _Scan:
    """What one ``git status`` showed: files over the size limit (path, size), nested
    repositories (``sub/``), names that are not UTF-8, and ignored paths (no bytecode)."""

    big: list[tuple[bytes, int]] = dataclasses.field(default_factory=list)
    nested: list[bytes] = dataclasses.field(default_factory=list)
    odd_names: list[bytes] = dataclasses.field(default_factory=list)
    ignored: list[bytes] = dataclasses.field(default_factory=list)


_STATUS_ARGS = [
    "status",
    "--porcelain=v1",
    "-z",
    "--ignored=matching",
    "--untracked-files=all",
    "--no-renames",
]


def _scan(git: str, workspace: Path, env: dict[str, str], limits: DiffLimits) -> _Scan:
    """One ``git status`` of the workspace against the seeded index: new or changed files
    over ``limits.max_file_bytes``, nested repositories, names that are not UTF-8, ignored
    paths.  Symlinks are not followed (git stores a link, not its target)."""
    listed = g.run_git(git, _STATUS_ARGS, cwd=workspace, env=env, timeout=limits.timeout)
    found = _Scan()
    if listed.returncode != 0:
        return found
    root = os.fsencode(os.path.abspath(workspace))
    for entry in listed.stdout.split(b"\0"):
        code, rel = entry[:2], entry[3:]
        if not rel:
            continue
        if code == b"!!":
            name = rel.rstrip(b"/").rsplit(b"/", 1)[-1]
            if name != b"__pycache__" and not name.endswith((b".pyc", b".pyo")):
                found.ignored.append(rel)
            continue
        if code != b"??" and code[1:2] not in (b"M", b"T"):
            continue  # unchanged in the work tree, or deleted
        if rel.endswith(b"/"):  # a directory git will not enter: a nested repository
            found.nested.append(rel)
            continue
        try:
            rel.decode("utf-8")
        except UnicodeDecodeError:
            found.odd_names.append(rel)
        try:
            st = os.lstat(os.path.join(root, rel))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > limits.max_file_bytes:
            found.big.append((rel, st.st_size))
    return found


_NAMES_SHOWN = 50


def _show(rel: bytes | str) -> str:
    """A path for a note: escaped when not UTF-8, shortened when very long."""
    text = rel if isinstance(rel, str) else rel.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= 300 else f"{text[:140]}...{text[-140:]} ({len(text)} characters)"


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMES_SHOWN])
    more = len(items) - _NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _nested_files(workspace: Path, rel: bytes, limit: int = 20) -> list[str]:
    """Some files of a nested repository (its ``.git`` left out), for the note."""
    root = os.fsencode(os.path.abspath(workspace))
    top = os.path.join(root, rel.rstrip(b"/"))
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d != b".git")
        for name in sorted(filenames):
            found.append(_show(os.path.relpath(os.path.join(dirpath, name), root)))
            if len(found) >= limit:
                return found
    return found


def _unreadable(workspace: Path, limit: int = 200) -> list[str]:
    """Directories and files git could not read (permissions, paths too long), by a walk
    that never follows links; only run when git complained."""
    root = os.path.abspath(workspace)
    found: list[str] = []

    def failed(exc: OSError) -> None:
        found.append(_show(os.path.relpath(os.fsdecode(exc.filename or root), root)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                found.append(_show(os.path.relpath(path, root)))
                continue
            if stat.S_ISREG(st.st_mode) and not os.access(path, os.R_OK):
                found.append(_show(os.path.relpath(path, root)))
        if len(found) >= limit:
            break
    return found


def _shadow_env(
    shadow: Path, index: Path, objects: Path, alternates: tuple[str, ...], workspace: Path
) -> dict[str, str]:
    return g.git_env(
        {
            "GIT_DIR": str(shadow),
            "GIT_WORK_TREE": os.path.abspath(workspace),
            "GIT_INDEX_FILE": str(index),
            "GIT_OBJECT_DIRECTORY": str(objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": ":".join(alternates),
        }
    )


def _alternates(workspace: Path, seed: Snapshot | None) -> tuple[str, ...]:
    """The snapshot's objects: outside the workspace when the snapshot says where (every
    snapshot :func:`prepare_workspace` makes); else the workspace's own (a bare sha)."""
    if seed is not None and seed.objects:
        return seed.objects
    return (os.path.abspath(workspace / ".git" / "objects"),)


def _seed_index(index: Path, seed: Snapshot | None) -> None:
    if seed is not None and seed.index is not None:
        # The index as it was after the snapshot, with its time: git re-reads a file whose
        # stat data changed, and (racy git) any file modified since that time.
        index.write_bytes(seed.index)
        os.utime(index, ns=(seed.index_mtime_ns, seed.index_mtime_ns))


def _add_all(
    git: str,
    workspace: Path,
    env: dict[str, str],
    limits: DiffLimits,
    notes: list[bytes],
) -> g.GitResult:
    """``git add -A`` of the workspace, leaving out (and naming in ``notes``) what it cannot
    or must not add: files over the size limit, nested repositories, unreadable paths."""
    found = _scan(git, workspace, env, limits)
    excluded = [rel for rel, _ in found.big] + [rel.rstrip(b"/") for rel in found.nested]
    if found.big:
        names = ", ".join(f"{_show(rel)} ({size} bytes)" for rel, size in sorted(found.big))
        notes.append(_note(f"left out of this diff, over {limits.max_file_bytes} bytes: {names}"))
    for rel in found.nested:
        files = _nested_files(workspace, rel)
        shown = f" (files: {_names(files)})" if files else ""
        notes.append(
            _note(f"not in this diff, a nested git repository: {_show(rel)}{shown}")
        )
    if found.odd_names:
        names = _names([_show(rel) for rel in found.odd_names])
        notes.append(_note(f"names that are not UTF-8 (shown escaped here): {names}"))
    if found.ignored:
        names = _names([_show(rel) for rel in found.ignored])
        notes.append(_note(f"not in this diff, ignored by a .gitignore: {names}"))
    add_args = ["add", "-A", "--ignore-errors"]
    pathspecs: bytes | None = None
    if excluded:
        add_args += ["--pathspec-from-file=-", "--pathspec-file-nul"]
        pathspecs = b"\0".join([b".", *(b":(exclude,literal)" + rel for rel in excluded)])
    add = g.run_git(git, add_args, cwd=workspace, env=env, input=pathspecs, timeout=limits.timeout)
    if add.returncode in (0, 1) and add.stderr.strip():
        unreadable = _unreadable(workspace)
        if unreadable:
            notes.append(_note(f"not in this diff, unreadable: {_names(unreadable)}"))
    return add


def _diff(
    git: str,
    workspace: Path,
    sha: str,
    seed: Snapshot | None,
    limits: DiffLimits,
    redactor: Redactor | None,
) -> bytes:
    shadow = _SCRATCH.diff_git_dir()
    index = shadow / "index"
    objects = shadow / "objects"
    notes: list[bytes] = []
    try:
        _seed_index(index, seed)
        env = _shadow_env(shadow, index, objects, _alternates(workspace, seed), workspace)
        add = _add_all(git, workspace, env, limits, notes)
        if add.returncode not in (0, 1):
            detail = add.stderr.decode(errors="replace").strip()
            return _note(f"git add failed (exit {add.returncode}); no diff: {detail}")
        diff = g.run_git(
            git,
            [*_DIFF_ARGS, "--full-index", sha, "--"],
            cwd=workspace,
            env=env,
            timeout=limits.timeout,
            max_output=limits.max_diff_bytes,
        )
        if diff.returncode != 0:
            detail = diff.stderr.decode(errors="replace").strip()
            return _note(
                f"git diff against snapshot {sha} failed (exit {diff.returncode});"
                f" no diff: {detail}"
            )
        out = diff.stdout
        if redactor:
            out = _drop_secret_binaries(out, workspace, redactor, notes)
        if diff.stdout_cut:
            out += f"\n[... {diff.stdout_cut} bytes left out ...]\n".encode()
        return b"".join(notes) + out
    finally:
        _clean_shadow(shadow)


def _clean_shadow(shadow: Path) -> None:
    """Nothing of one diff is left for the next: its index and the objects it wrote."""
    for leftover in (shadow / "index", shadow / "index.lock"):
        leftover.unlink(missing_ok=True)
    with os.scandir(shadow / "objects") as it:
        written = [e.path for e in it if e.name not in ("info", "pack")]
    for path in written:
        shutil.rmtree(path, ignore_errors=True)


def snapshot_after_setup(
    workspace: Path, snapshot: Snapshot, *, limits: DiffLimits = DEFAULT_DIFF_LIMITS
) -> Snapshot:
    """The workspace as the setup step left it, snapshotted like the fixture (its new
    objects kept outside the workspace): the diff taken against it is the agent's change
    alone.  Returns ``snapshot`` itself when git cannot make it (the diff then also shows
    the setup's changes)."""
    git = shutil.which("git")
    if git is None or snapshot.index is None:
        return snapshot
    with _SCRATCH.lock:
        shadow = _SCRATCH.diff_git_dir()
        index = shadow / "index"
        kept = Path(tempfile.mkdtemp(prefix="baseline-", dir=_SCRATCH.directory())) / "objects"
        kept.mkdir()
        try:
            _seed_index(index, snapshot)
            env = _shadow_env(shadow, index, kept, _alternates(workspace, snapshot), workspace)
            notes: list[bytes] = []
            add = _add_all(git, workspace, env, limits, notes)
            tree = g.run_git(git, ["write-tree"], cwd=workspace, env=env, timeout=limits.timeout)
            tree_sha = tree.stdout.decode(errors="replace").strip()
            if add.returncode not in (0, 1) or tree.returncode != 0 or not g.is_sha(tree_sha):
                shutil.rmtree(kept.parent, ignore_errors=True)
                return snapshot
            data, mtime = index.read_bytes(), index.stat().st_mtime_ns
            return Snapshot(tree_sha, data, mtime, (*snapshot.objects, str(kept)))
        except OSError:
            shutil.rmtree(kept.parent, ignore_errors=True)
            return snapshot
        finally:
            _clean_shadow(shadow)


def release_snapshot(snapshot: Snapshot | None) -> None:
    """Remove the objects :func:`snapshot_after_setup` kept (once the diff is taken)."""
    if snapshot is None:
        return
    scratch = str(_SCRATCH.directory())
    for objects in snapshot.objects:
        parent = os.path.dirname(objects)
        if os.path.basename(parent).startswith("baseline-") and parent.startswith(scratch):
            shutil.rmtree(parent, ignore_errors=True)


_FILE_HEADER = re.compile(rb"^diff --git ", re.MULTILINE)
_BINARY_HUNK = re.compile(rb"^(literal|delta) (\d+)\n((?:[A-Za-z].*\n)*)", re.MULTILINE)


def _b85_line(line: bytes) -> bytes:
    """One line of git's base85: a length character, then the data."""
    n = line[0] - 64 if line[0] <= 90 else line[0] - 96 + 26
    data = line[1:]
    return base64.b85decode(data)[:n]


def _binary_hunks(block: bytes) -> list[bytes]:
    """The inflated hunks of one file's ``GIT binary patch`` (literal content or delta)."""
    hunks: list[bytes] = []
    for m in _BINARY_HUNK.finditer(block):
        try:
            raw = b"".join(_b85_line(line) for line in m.group(3).splitlines() if line)
            hunks.append(zlib.decompress(raw))
        except (ValueError, zlib.error):
            hunks.append(block)  # undecodable: check the patch text itself
    return hunks


def _drop_secret_binaries(
    diff: bytes, workspace: Path, redactor: Redactor, notes: list[bytes]
) -> bytes:
    """Replace each binary patch whose content holds a secret with a note.  The content is
    checked as git encoded it (literal and delta hunks, inflated) and as the file now is in
    the workspace (read without following a link)."""
    if b"GIT binary patch" not in diff:
        return diff
    starts = [m.start() for m in _FILE_HEADER.finditer(diff)] + [len(diff)]
    parts: list[bytes] = [diff[: starts[0]]]
    for begin, end in itertools.pairwise(starts):
        block = diff[begin:end]
        at = block.find(b"\nGIT binary patch\n")
        if at < 0:
            parts.append(block)
            continue
        header = block.split(b"\n", 1)[0]
        secret = any(redactor.contains(h) for h in _binary_hunks(block[at:]))
        if not secret:
            secret = _file_holds_secret(workspace, header, redactor)
        if secret:
            name = redactor.redact(header[len(b"diff --git ") :].decode(errors="replace"))
            notes.append(_note(f"binary patch left out, the file holds a secret: {name}"))
            parts.append(block[:at] + b"\nBinary files differ (content left out: a secret)\n")
        else:
            parts.append(block)
    return b"".join(parts)


def _file_holds_secret(workspace: Path, header: bytes, redactor: Redactor) -> bool:
    text = header[len(b"diff --git ") :]
    cut = text.rfind(b" b/")
    if cut < 0 or text.startswith(b'"'):
        return False  # a quoted name: the hunks were checked
    path = os.path.join(os.fsencode(os.path.abspath(workspace)), text[cut + 3 :])
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        return redactor.contains(f.read())


def workspace_diff(
    workspace: Path,
    snapshot: Snapshot | str | None = None,
    *,
    limits: DiffLimits = DEFAULT_DIFF_LIMITS,
    redactor: Redactor | None = None,
) -> str:
    """The agent's change: a git patch (``--binary``) of the workspace against the snapshot.

    Includes modified, new (untracked), deleted and binary files; honours ``.gitignore``.
    ``snapshot`` defaults to the commit recorded in ``refs/evalrun/snapshot``.  Never raises:
    when no diff can be made (``.git`` deleted, snapshot gone, git missing) the result is a
    one-line note starting with ``# evalrun:``.  Bytes that are not UTF-8 are replaced.
    ``limits``: see :class:`DiffLimits` (files left out are named in notes at the top).
    ``redactor``: binary patches holding a secret are left out (text is the caller's to mask).
    """
    return workspace_diff_bytes(workspace, snapshot, limits=limits, redactor=redactor).decode(
        "utf-8", errors="replace"
    )
