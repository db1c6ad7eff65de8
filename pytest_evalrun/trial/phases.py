"""The view each phase of a trial gets (docs/isolation.md), as data.

Every sandboxed step sees the system's directories (:data:`~.sandboxview.SYSTEM_DIRS`,
read-only), the Python running pytest and this plugin's package, a private ``/tmp`` with its
workspace at ``/tmp/workspace`` and an empty ``HOME``, and what its phase adds here (an
*allowlist*: what is not listed does not exist inside):

========  ==============================================================================
setup     the trial directory and the experiment directory (read-only), pytest's rootdir
          (read-only), the artifacts directory (writable)
agent     its prompt file (read-only) and its artifacts directory (writable), nothing of the
          experiment directory or the rootdir but the files its own command names
verify    the trial directory and the experiment directory (read-only: the grader, hidden
          tests, expected answers), the artifacts and verifier directories (writable); it
          starts when every process of the agent is gone (the agent's PID namespace died)
========  ==============================================================================

All three: ``sandbox: read:`` (read-only) and ``sandbox: write:`` (writable) paths, and the
step's own program (:func:`program_paths`).  Inside the experiment directory and the rootdir,
``.env`` files, ``.git`` and a few credential files are hidden from setup and verify too
(:data:`GRADER_SECRETS`): verify runs the agent's code.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import pwd
import shlex
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .realpath import realpath

__all__ = [
    "GRADER_SECRETS",
    "PHASES",
    "View",
    "exposable",
    "module_paths",
    "phase_view",
    "program_paths",
]

PHASES = ("setup", "agent", "verify")

#: Names (globs) in the experiment directory and the rootdir that no step sees.
GRADER_SECRETS: tuple[str, ...] = (
    ".env", ".env.*", ".envrc", ".git", ".netrc", ".npmrc", ".pypirc", ".pgpass", ".s3cfg",
)  # fmt: skip

#: Directories never made visible whole for a step's program (only the program itself).
_NEVER_WHOLE = ("/", "/tmp", "/var", "/var/tmp", "/home", "/root", "/run", "/srv", "/mnt",
                "/media", "/usr", "/opt")  # fmt: skip
#: A program in ``<prefix>/<one of these>/`` is installed in ``<prefix>``.
_BIN_DIRS = ("bin", "sbin", "shims")
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh")


@dataclass(frozen=True)
class View:
    """What one phase's step may see besides the system: ``read`` read-only, ``writable`` at
    their own path, ``hide`` covered inside what is visible."""

    phase: str
    read: tuple[Path, ...]
    writable: tuple[Path, ...]
    hide: tuple[Path, ...]


def phase_view(
    phase: str,
    *,
    trial_dir: Path,
    prompt_file: Path,
    artifacts: Path,
    experiment_dir: Path,
    rootdirs: Sequence[Path] = (),
    verifier: Path | None = None,
    hide: Sequence[Path] = (),
) -> View:
    """The view of ``phase`` (one of :data:`PHASES`); ``rootdirs``: pytest's rootdir (setup
    only); ``hide``: the results and jobs roots; ``verifier``: verify's writable directory."""
    if phase == "agent":
        return View(phase, (prompt_file,), (artifacts,), tuple(hide))
    grader = (experiment_dir, *rootdirs) if phase == "setup" else (experiment_dir,)
    secrets = tuple(grader_secrets(grader))
    writable = (artifacts, verifier) if phase == "verify" and verifier else (artifacts,)
    return View(phase, (trial_dir, *grader), writable, (*hide, *secrets))


def grader_secrets(directories: Iterable[Path]) -> Iterable[Path]:
    """The entries of ``directories`` matching :data:`GRADER_SECRETS`."""
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if any(fnmatch.fnmatchcase(name, g) for g in GRADER_SECRETS):
                yield Path(directory, name)


# --------------------------------------------------------------------------- programs


@functools.lru_cache(maxsize=1)
def _homes() -> tuple[str, ...]:
    found = {os.path.realpath(os.path.expanduser("~"))}
    try:
        for entry in pwd.getpwall():
            if entry.pw_dir and os.path.isdir(entry.pw_dir):
                found.add(os.path.realpath(entry.pw_dir))
    except OSError:  # pragma: no cover - no passwd database
        pass
    return tuple(sorted(found))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def exposable(path: Path | str, protect: Sequence[Path | str] = ()) -> bool:
    """May ``path`` be made visible whole?  Not ``/`` or a top-level area (``/tmp``,
    ``/home``...), not a home, and not a directory holding one of ``protect`` (the experiment
    directory, the rootdir) or a home."""
    real = realpath(path)
    if real in _NEVER_WHOLE or (real.count("/") < 2 and os.path.isdir(real)):
        return False
    guarded = [realpath(p) for p in protect] + [h for h in _homes() if h != "/"]
    return not any(_under(g, real) for g in guarded)


def _inside_protected(path: str, protect: Sequence[Path | str]) -> bool:
    return any(_under(path, realpath(p)) for p in protect)


def _install(found: str, protect: Sequence[Path | str]) -> list[str]:
    """What to make visible for the program at ``found``: its install prefix
    (``.../node_modules/<package>/...``: that ``node_modules``; ``<prefix>/bin/<program>``:
    ``<prefix>``; else its directory) when that may be shown
    whole and is no part of the experiment directory or rootdir (but for a venv), else the
    program alone; and ``found`` itself when it is a link (e.g. ``~/.local/bin/claude``)."""
    real = realpath(found)
    paths = [found] if found != real else []
    directory = os.path.dirname(real)
    candidates = [directory]
    if os.path.basename(directory) in _BIN_DIRS:
        candidates.insert(0, os.path.dirname(directory))
    parts = real.split("/")
    if "node_modules" in parts:  # an npm package needs its neighbours (its dependencies)
        candidates.insert(0, "/".join(parts[: parts.index("node_modules") + 1]))
    for prefix in candidates:
        venv = os.path.isfile(os.path.join(prefix, "pyvenv.cfg"))
        if exposable(prefix, protect) and (venv or not _inside_protected(prefix, protect)):
            return [*paths, prefix]
    return [*paths, real]


def _words(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(programs, words)`` of a command: ``argv[0]``, and for ``sh -c 'STRING'`` the first
    word of STRING (after ``VAR=value`` assignments) too; every word of both."""
    words, programs = list(argv), list(argv[:1])
    if len(argv) >= 3 and os.path.basename(argv[0]) in _SHELLS and argv[1] == "-c":
        try:
            inner = shlex.split(argv[2])
        except ValueError:
            inner = []
        words += inner
        names = [w for w in inner if not ("=" in w and not w.startswith(("/", ".")))]
        programs += names[:1]
    return programs, words


def program_paths(
    argv: Sequence[str],
    *,
    path: str | None,
    cwd: Path | str,
    protect: Sequence[Path | str] = (),
    deny: Sequence[Path | str] = (),
) -> tuple[Path, ...]:
    """What a step's own program needs visible: its executable (found on ``path``) with its
    install prefix, and every existing file or directory its command names by absolute path
    (e.g. a script beside the YAML: the file itself, never the whole experiment directory);
    nothing inside ``deny`` (credential stores, the results and jobs roots)."""
    programs, words = _words(argv)
    found: list[str] = []
    for program in programs:
        where = (
            os.path.join(cwd, program) if "/" in program else shutil.which(program, path=path)
        )
        if where and os.path.isfile(where):
            found += _install(os.path.abspath(where), protect)
    for word in words:
        if os.path.isabs(word) and os.path.lexists(word) and not _under(word, "/tmp/workspace"):
            if os.path.isdir(word) and not exposable(word, protect):
                continue
            found.append(word)
    denied = [realpath(d) for d in deny]
    kept = [(p, realpath(p)) for p in dict.fromkeys(found)]
    return tuple(Path(p) for p, real in kept if not any(_under(real, d) for d in denied))


def module_paths(value: str, search: Path) -> tuple[Path, ...]:
    """A ``python:`` step's own module when it lives in ``search`` (the experiment
    directory): the top-level package directory or the module file, nothing else."""
    top = value.partition(":")[0].split(".")[0]
    if not top.isidentifier():
        return ()
    for candidate in (search / top, search / f"{top}.py"):
        if candidate.exists():
            return (candidate,)
    return ()


def safe_reads(paths: Iterable[Path], protect: Sequence[Path | str] = ()) -> tuple[Path, ...]:
    """``paths`` that may be made visible whole (:func:`exposable`)."""
    return tuple(p for p in paths if exposable(p, protect))
