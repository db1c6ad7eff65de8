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


def _subdirs(path: Path) -> list[str]:
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
    for exp in _subdirs(results):
        for run in _subdirs(results / exp):
            yield RunDir(exp, run, results / exp / run)


@dataclass(frozen=True)
class TrialPath:
    variant: str
    task: str
    trial: int
    path: Path


def iter_trial_dirs(run_dir: Path) -> Iterator[TrialPath]:
    """Every ``variants/<v>/tasks/<t>/trials/<NNN>/`` of a run, sorted."""
    variants = run_dir / "variants"
    for v in _subdirs(variants):
        tasks = variants / v / "tasks"
        for t in _subdirs(tasks):
            trials = tasks / t / "trials"
            for n in _subdirs(trials):
                if n.isdigit():
                    yield TrialPath(v, t, int(n), trials / n)


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
