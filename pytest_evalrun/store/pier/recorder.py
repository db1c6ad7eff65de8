"""The Harbor ``jobs/`` layout as a Recorder: one Pier job per experiment run.

Not essential: when the Pier copy of a trial cannot be written, the trial is still recorded
(standard layout and index) and its message says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...experiment.model import Task, Variant
from ...outcome import TrialOutcome
from ..paths import RunPaths
from ..recorder import FinishedRun, Recorder, RunInfo
from ..runs import utc_now
from .job import PierJob


def pier_job_name(paths: RunPaths) -> str:
    return f"{paths.run_id}__{paths.experiment}"


#: Namespace of job ids: a run's job id is derived from its name, so every process, and every
#: shard of a run on another machine, gives the job the same id.
_JOB_NAMESPACE = uuid.UUID("0d6a3f52-52d9-4b51-9a0e-4f1f3e7c2b11")


def pier_job_id(job_name: str) -> str:
    return str(uuid.uuid5(_JOB_NAMESPACE, job_name))


def open_pier_job(run: RunInfo) -> PierJob:
    """The Pier job of one experiment run, named and seeded alike in every process."""
    name = pier_job_name(run.paths)
    return PierJob(
        run.jobs,
        name,
        job_id=pier_job_id(name),
        run_id=run.paths.run_id,
        secrets=run.experiment.secret_values,
    )


class PierRecorder(Recorder):
    name = "Pier jobs layout"
    essential = False

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], PierJob] = {}

    def job(self, run: RunInfo) -> PierJob:
        key = (run.paths.experiment, run.paths.run_id)
        job = self._jobs.get(key)
        if job is None:
            job = open_pier_job(run)
            job.ensure_config(
                experiments=[run.experiment],
                n_total_trials=run.n_total_trials,
                started_at=run.started_at or utc_now(),
                n_concurrent_trials=run.n_concurrent,
            )
            self._jobs[key] = job
        return job

    def start_run(self, run: RunInfo) -> None:
        # The job exists (and shows as started) before its first trial.
        self.job(run)

    def begin_trial(
        self, run: RunInfo, variant: Variant, task: Task, trial: int
    ) -> Mapping[str, Any]:
        """The trial's Pier directory, named before it runs so meta.json is written once."""
        job = self.job(run)
        exp = run.experiment
        name = job.trial_dir_name(exp.name, variant.name, task.name, trial, task_slug=task.slug)
        return {"pier_trial_dir": str(job.job_dir / name)}

    def record_trial(
        self, run: RunInfo, outcome: TrialOutcome, variant: Variant, task: Task
    ) -> Mapping[str, Any]:
        path = self.job(run).write_trial(
            outcome,
            trial_dir=Path(outcome.trial_dir),
            experiment=run.experiment,
            variant=variant,
            task=task,
        )
        if outcome.pier_trial_dir != str(path):  # claimed differently after all
            return {"pier_trial_dir": str(path)}
        return {}

    def finish_run(self, finished: FinishedRun) -> None:
        if not finished.ran:
            return
        run, outcomes = finished.run, finished.outcomes
        job = open_pier_job(run)
        nothing_ran = bool(outcomes) and all(o.resumed for o in outcomes)
        if nothing_ran and job.reopen_unchanged(
            n_total_trials=run.n_total_trials, finished_at=utc_now()
        ):
            return
        job.ensure_config(
            experiments=[run.experiment],
            n_total_trials=run.n_total_trials,
            started_at=run.started_at or utc_now(),
            recompute_stats=False,  # finalize() below recomputes them
        )
        job.finalize(outcomes, n_total_trials=run.n_total_trials, finished_at=utc_now())
