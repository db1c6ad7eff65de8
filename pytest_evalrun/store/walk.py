"""Walking the standard layout on disk: experiment and run directories, trial directories.

The files are the source of truth; these walks are what ``evalrun reindex``, ``check`` and
``gc`` read (never the index).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .pier.files import JOB_MARKER
from .pier.names import safe_job_name


def subdirs(path: Path | str) -> list[str]:
    """The names of ``path``'s subdirectories (not hidden, no links), sorted; [] when none."""
    try:
        with os.scandir(path) as it:
            return sorted(
                e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            )
    except OSError:
        return []


@dataclass(frozen=True)
class RunDir:
    experiment: str  # slug (the directory's name)
    run_id: str  # the directory's name
    path: Path

    @property
    def key(self) -> tuple[str, str]:
        return (self.experiment, self.run_id)


def iter_run_dirs(results: Path) -> Iterator[RunDir]:
    """Every ``<results>/<experiment>/<run>/`` directory (hidden ones skipped), sorted."""
    for exp in subdirs(results):
        for run in subdirs(results / exp):
            yield RunDir(exp, run, results / exp / run)


@dataclass(frozen=True)
class TrialPath:
    variant: str
    task: str
    trial: int
    path: Path


def iter_trial_dirs(run_dir: Path) -> Iterator[TrialPath]:
    """Every ``variants/<v>/tasks/<t>/trials/<NNN>/`` of a run, sorted."""
    for v, t, n, rel in iter_trial_rels(run_dir):
        yield TrialPath(v, t, n, run_dir / rel)


def iter_trial_rels(run_dir: Path) -> Iterator[tuple[str, str, int, str]]:
    """(variant, task, trial number, path relative to the run) of every trial directory,
    sorted: :func:`iter_trial_dirs` without building a Path for each (a merge walks tens of
    thousands)."""
    base = str(run_dir)
    for v in subdirs(f"{base}/variants"):
        for t in subdirs(f"{base}/variants/{v}/tasks"):
            trials = f"variants/{v}/tasks/{t}/trials"
            for n in subdirs(f"{base}/{trials}"):
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
