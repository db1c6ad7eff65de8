"""Which Pier trial directory holds which trial: names claimed under the job's lock.

A trial's directory is named by :func:`.names.trial_name_for` from the job's naming run id
(fixed by the first process that touches the job, in ``.evalrun-job.json``) and claimed with
an owner marker (``.evalrun.json``); a name another trial owns (a hash collision) moves on to
the next attempt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_evalrun.outcome import TrialOutcome
from pytest_evalrun.store.atomic import write_json_atomic
from pytest_evalrun.store.pier import jobnames
from pytest_evalrun.store.pier.files import MARKER, JobFiles, json_or_none

_MAX_ATTEMPTS = 100
#: Attempts searched for an existing directory before claiming a new one.
_FIND_ATTEMPTS = 3


class TrialClaims:
    """The trial directories of one job, named and claimed alike in every process."""

    def __init__(self, files: JobFiles, given_run_id: str, requested_name: str) -> None:
        self.files = files
        self._given_run_id = given_run_id
        self._requested_name = requested_name
        self._run_id: str | None = None

    @property
    def run_id(self) -> str:
        """The run id that seeds trial names: the job's first writer fixes it for everyone."""
        if self._run_id is None:
            path = self.files.marker_path
            data = json_or_none(path)
            if not (isinstance(data, dict) and isinstance(data.get("run_id"), str)):
                with self.files.lock():
                    data = json_or_none(path)
                    if not (isinstance(data, dict) and isinstance(data.get("run_id"), str)):
                        data = {"run_id": self._given_run_id, "job_name": self._requested_name}
                        write_json_atomic(path, data)
            self._run_id = str(data["run_id"])
        return self._run_id

    def owner(self, experiment: str, variant: str, task: str, trial: int) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment": experiment,
            "variant": variant,
            "task": task,
            "trial": trial,
        }

    def claim(
        self, experiment: str, variant: str, task: str, trial: int, task_slug: str | None
    ) -> Path:
        """The trial's directory, created and marked as its own on first use."""
        owner = self.owner(experiment, variant, task, trial)
        for attempt in range(_MAX_ATTEMPTS):
            name = jobnames.trial_name_for(
                self.run_id, experiment, variant, task, trial, task_slug=task_slug,
                attempt=attempt,
            )
            path = self.files.job_dir / name
            marker = json_or_none(path / MARKER)
            if marker == owner:
                return path
            if marker is not None:
                continue  # owned by another trial: a name collision
            with self.files.lock():
                marker = json_or_none(path / MARKER)
                if marker is None:
                    # New, or an unmarked directory (a crash before its marker): take it.
                    path.mkdir(parents=True, exist_ok=True)
                    write_json_atomic(path / MARKER, owner)
                    return path
                if marker == owner:
                    return path
        raise RuntimeError(f"no free Pier trial name for {owner}")  # pragma: no cover

    def by_suffix(self) -> dict[str, list[str]]:
        """The job directory's entries named ``<stem>__<suffix>``, by suffix (one listing)."""
        found: dict[str, list[str]] = {}
        if self.files.job_dir.is_dir():
            for entry in os.listdir(self.files.job_dir):
                stem, sep, suffix = entry.rpartition("__")
                if sep and stem:
                    found.setdefault(suffix, []).append(entry)
        return found

    def find(self, outcome: TrialOutcome, by_suffix: Mapping[str, list[str]]) -> Path:
        """The outcome's trial directory: where it was written, whatever its stem; claimed
        now when it has none."""
        job_dir = self.files.job_dir
        if outcome.pier_trial_dir:
            given = Path(outcome.pier_trial_dir)
            same_job = given.parent == job_dir or given.parent.resolve() == self.files.resolved
            if same_job and (given / MARKER).is_file():
                return given
        owner = self.owner(outcome.experiment, outcome.variant, outcome.task, outcome.trial)
        for attempt in range(_FIND_ATTEMPTS):
            suffix = jobnames.trial_suffix(
                self.run_id, outcome.experiment, outcome.variant, outcome.task, outcome.trial,
                attempt,
            )
            for name in by_suffix.get(suffix, ()):
                if json_or_none(job_dir / name / MARKER) == owner:
                    return job_dir / name
        return self.claim(
            outcome.experiment, outcome.variant, outcome.task, outcome.trial,
            outcome.task_slug or outcome.task,
        )
