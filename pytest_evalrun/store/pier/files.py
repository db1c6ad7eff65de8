"""A Pier job's directory: its file names, its lock, its log, and tolerant JSON/text reads.

Every other module of the package reaches the job's files through :class:`JobFiles`; nothing
here knows what the files mean.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_evalrun.store.pier.harborvalues import fmt_time, parse_time

RESULT_LOCK = ".result.lock"
PENDING = ".pending.jsonl"
#: A trial directory's owner marker: which (run, experiment, variant, task, trial) it holds.
MARKER = ".evalrun.json"
#: The job's naming marker: the run id that seeds trial names, fixed by the first writer.
JOB_MARKER = ".evalrun-job.json"
LOCK_TIMEOUT = 600.0


def now() -> datetime:
    return datetime.now(timezone.utc)


def norm_time(value: Any, default: datetime | None = None) -> str | None:
    """``value`` as Harbor's timestamp text, else ``default``'s (None when neither)."""
    parsed = parse_time(value)
    return fmt_time(parsed if parsed is not None else default)


def json_or_none(path: Path | str) -> Any:
    """The file's JSON value; None when it is missing or not JSON."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None


def read_text(path: Path, limit: int | None = None) -> str | None:
    """The file's text (its last ``limit`` bytes when longer); None when unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if limit is not None and len(data) > limit:
        data = data[-limit:]
    return data.decode("utf-8", errors="replace")


class JobFiles:
    """``<jobs_dir>/<job_name>/``: paths of the job's own files and its re-entrant lock."""

    def __init__(self, jobs_dir: Path, job_name: str) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.job_name = job_name
        self.job_dir = self.jobs_dir / job_name
        self._filelock: FileLock | None = None
        self._resolved: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.job_dir / "config.json"

    @property
    def result_path(self) -> Path:
        return self.job_dir / "result.json"

    @property
    def lock_path(self) -> Path:
        return self.job_dir / RESULT_LOCK

    @property
    def pending_path(self) -> Path:
        return self.job_dir / PENDING

    @property
    def log_path(self) -> Path:
        return self.job_dir / "job.log"

    @property
    def marker_path(self) -> Path:
        return self.job_dir / JOB_MARKER

    @property
    def resolved(self) -> Path:
        """The job directory with symlinks resolved (computed once)."""
        if self._resolved is None:
            self._resolved = self.job_dir.resolve()
        return self._resolved

    def lock(self) -> FileLock:
        """The job's lock: one re-entrant FileLock per JobFiles (nesting is safe)."""
        if self._filelock is None:
            self.job_dir.mkdir(parents=True, exist_ok=True)
            self._filelock = FileLock(str(self.lock_path), timeout=LOCK_TIMEOUT)
        return self._filelock

    def log(self, line: str) -> None:
        """Append one timestamped line to job.log."""
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{fmt_time(now())} {line}\n")

    def trial_names(self) -> list[str]:
        """The names of every trial-like subdirectory (not hidden), sorted."""
        try:
            with os.scandir(self.job_dir) as entries:
                return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
        except OSError:
            return []
