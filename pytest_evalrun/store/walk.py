"""Walking the standard layout on disk: experiment and run directories, trial directories.

The files are the source of truth; these walks are what ``evalrun reindex``, ``check`` and
``gc`` read (never the index).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .pier.files import JOB_MARKER
from .pier.jobnames import safe_job_name

#: Where a walk notes the directories it could not read: (path, reason).
Unreadable = list[tuple[str, str]]


def subdirs(path: Path | str, unreadable: Unreadable | None = None) -> list[str]:
    """The names of ``path``'s subdirectories (not hidden, no links), sorted; [] when none.

    A directory that exists but cannot be read (permissions, a loop) gives [] too, and is
    noted in ``unreadable`` when given, so a caller that must tell the truth can."""
    try:
        with os.scandir(path) as it:
            return sorted(
                e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            )
    except FileNotFoundError:
        return []
    except OSError as exc:
        if unreadable is not None and os.path.lexists(path):
            unreadable.append((str(path), f"unreadable directory: {exc.strerror or exc}"))
        return []


def not_regular(path: Path | str) -> str | None:
    """Why ``path`` (followed, when a link) is not a regular file to read (a FIFO would block
    the reader forever, a device never end); None when it is one or does not exist."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{kind}, not a regular file"


@dataclass(frozen=True)
class RunDir:
    experiment: str  # slug (the directory's name)
    run_id: str  # the directory's name
    path: Path

    @property
    def key(self) -> tuple[str, str]:
        return (self.experiment, self.run_id)


def iter_run_dirs(results: Path, unreadable: Unreadable | None = None) -> Iterator[RunDir]:
    """Every ``<results>/<experiment>/<run>/`` directory (hidden ones skipped), sorted."""
    for exp in subdirs(results, unreadable):
        for run in subdirs(results / exp, unreadable):
            yield RunDir(exp, run, results / exp / run)


@dataclass(frozen=True)
class TrialPath:
    variant: str
    task: str
    trial: int
    path: Path


def iter_trial_dirs(run_dir: Path, unreadable: Unreadable | None = None) -> Iterator[TrialPath]:
    """Every ``variants/<v>/tasks/<t>/trials/<NNN>/`` of a run, sorted: the one walk of a
    run's trials (``check``, ``reindex``, ``merge``, the HTML report). Hidden directories and
    links are skipped at every level (a link could point outside the run)."""
    for v, t, n, rel in iter_trial_rels(run_dir, unreadable):
        yield TrialPath(v, t, n, run_dir / rel)


def iter_trial_rels(
    run_dir: Path, unreadable: Unreadable | None = None
) -> Iterator[tuple[str, str, int, str]]:
    """(variant, task, trial number, path relative to the run) of every trial directory,
    sorted: :func:`iter_trial_dirs` without building a Path for each (a merge walks tens of
    thousands)."""
    base = str(run_dir)
    if os.path.islink(f"{base}/variants"):
        return
    for v in subdirs(f"{base}/variants", unreadable):
        for t in subdirs(f"{base}/variants/{v}/tasks", unreadable):
            trials = f"variants/{v}/tasks/{t}/trials"
            for n in subdirs(f"{base}/{trials}", unreadable):
                if n.isdigit():
                    yield v, t, int(n), f"{trials}/{n}"


def pier_job_dir(jobs: Path, experiment: str, run_id: str) -> Path:
    """The Pier job of a run: ``<jobs>/<run id>__<experiment slug>`` (made a safe name)."""
    return jobs / safe_job_name(f"{run_id}__{experiment}")


def is_pier_job_of(job_dir: Path, run_id: str) -> bool:
    """True when ``job_dir`` is a Pier job written for ``run_id`` (its marker says so, or it
    has a job config.json and no marker naming another run)."""
    if not job_dir.is_dir() or job_dir.is_symlink():
        return False
    try:
        marker = json.loads((job_dir / JOB_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    if isinstance(marker, dict) and isinstance(marker.get("run_id"), str):
        return bool(marker["run_id"] == run_id)
    return (job_dir / "config.json").is_file()
