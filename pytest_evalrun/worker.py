"""The worker side: run one trial item and record it (in every process that runs items).

For each item: reuse the recorded outcome when ``--eval-resume`` finds it still stands, else
claim the trial with a file lock (so two pytest processes resuming one run never run a trial
twice), run it, and record it in both layouts and the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from filelock import FileLock

from .outcome import TrialOutcome
from .resume import recorded_outcome
from .secrets import Redactor
from .spec.model import Experiment, Task, Variant
from .store import index, layout, runs
from .store.paths import RunPaths
from .trial.identity import fingerprint, seed
from .trial.run import TrialSpec, run_trial

if TYPE_CHECKING:
    from .collect import TrialItem
    from .session import EvalState
    from .store.pier import PierJob


class Worker:
    def __init__(self, state: EvalState) -> None:
        self.state = state
        self.shared = state.shared
        self.results = Path(self.shared.results)
        self._started: set[str] = set()
        self._described: set[tuple[str, str, str]] = set()
        self._redactors: dict[str, Redactor] = {}
        self._pier: dict[str, PierJob] = {}
        self._kinds = state.kinds
        self._git: dict[str, Any] | None = None
        self._info: dict[str, Any] | None = None

    # -- per experiment / variant / task, once per process -----------------------------
    def _start_experiment(self, exp: Experiment, paths: RunPaths) -> None:
        if exp.slug in self._started:
            return
        if self._git is None:
            self._git = runs.git_state(exp.directory)
            self._info = runs.environment_info()
        runs.start_run(
            paths,
            experiment=exp.name,
            experiment_file=str(exp.path),
            session_id=self.shared.session_id,
            pytest_args=self.redactor(exp).redact_obj(list(self.shared.pytest_args)),
            git=self._git,
            info=self._info or {},
        )
        # The job exists (and shows as started) before its first trial; a problem with it is
        # reported when the trial is recorded, never lost here.
        with contextlib.suppress(Exception):
            self.pier(exp, paths)
        self._started.add(exp.slug)

    def _describe(self, exp: Experiment, variant: Variant, task: Task, paths: RunPaths) -> None:
        key = (exp.slug, variant.slug, task.slug)
        if key in self._described:
            return
        redactor = self.redactor(exp)
        vfile = paths.variant_dir(variant.slug) / "variant.json"
        if not vfile.exists():
            layout.write_variant(vfile, variant, redactor)
        tfile = paths.task_dir(variant.slug, task.slug) / "task.json"
        if not tfile.exists():
            layout.write_task(tfile, task, redactor)
        self._described.add(key)

    def redactor(self, exp: Experiment) -> Redactor:
        r = self._redactors.get(exp.slug)
        if r is None:
            r = self._redactors[exp.slug] = Redactor(exp.secret_values)
        return r

    def pier(self, exp: Experiment, paths: RunPaths) -> PierJob:
        job = self._pier.get(exp.slug)
        if job is None:
            job = open_pier_job(self.shared.jobs, paths, exp)
            total = self.state.collected_per_experiment.get(exp.slug, exp.n_items)
            workers = getattr(self.state.config, "workerinput", {}).get("workercount")
            job.ensure_config(
                experiments=[exp],
                n_total_trials=total,
                started_at=self.shared.started_at or runs.utc_now(),
                n_concurrent_trials=workers or 1,
            )
            self._pier[exp.slug] = job
        return job

    # -- one item ------------------------------------------------------------------------
    def run_item(self, item: TrialItem) -> TrialOutcome:
        exp, variant, task, n = item.experiment, item.variant, item.task, item.trial
        paths = self.shared.run_paths(exp.slug)
        trial_dir = paths.trial_dir(variant.slug, task.slug, n)
        fp = fingerprint(variant, task, n, self.redactor(exp))
        if self.shared.resume:
            reused = recorded_outcome(trial_dir, fp)
            if reused is not None:
                reused.nodeid = item.nodeid
                return reused
        self._start_experiment(exp, paths)
        self._describe(exp, variant, task, paths)
        with FileLock(str(claim_lock(paths, variant.slug, task.slug, n))):
            # Another process (a concurrent resume) may have finished it while we waited.
            reused = recorded_outcome(trial_dir, fp)
            if reused is not None:
                reused.nodeid = item.nodeid
                return reused
            spec = TrialSpec(
                pier_trial_dir=self._claim_pier_dir(exp, variant, task, n, paths),
                experiment=exp,
                variant=variant,
                task=task,
                trial=n,
                run_id=paths.run_id,
                trial_dir=trial_dir,
                seed=seed(exp.name, variant.name, task.name, n),
                fingerprint=fp,
                nodeid=item.nodeid,
                worker=self.state.worker_id,
                redactor=self.redactor(exp),
                kinds=self._kinds,
                env_hook=self._env_hook(exp, variant, task, n),
                templates=Path(self.shared.snapshots) if self.shared.snapshots else None,
            )
            outcome = run_trial(spec)
        self._record(exp, variant, task, paths, outcome)
        return outcome

    def _claim_pier_dir(
        self, exp: Experiment, variant: Variant, task: Task, n: int, paths: RunPaths
    ) -> str | None:
        """The trial's Pier directory, named before it runs so meta.json is written once."""
        try:
            job = self.pier(exp, paths)
            name = job.trial_dir_name(exp.name, variant.name, task.name, n, task_slug=task.slug)
        except Exception:  # the Pier copy is written (or reported missing) after the trial
            return None
        return str(job.job_dir / name)

    def _env_hook(self, exp: Experiment, variant: Variant, task: Task, n: int) -> Any:
        hook = self.state.config.hook.pytest_evalrun_trial_env

        def apply(env: dict[str, str]) -> None:
            hook(env=env, experiment=exp, variant=variant, task=task, trial=n)

        return apply

    def _record(
        self, exp: Experiment, variant: Variant, task: Task, paths: RunPaths, outcome: TrialOutcome
    ) -> None:
        trial_dir = Path(outcome.trial_dir)
        try:
            pier_dir = self.pier(exp, paths).write_trial(
                outcome, trial_dir=trial_dir, experiment=exp, variant=variant, task=task
            )
            if outcome.pier_trial_dir != str(pier_dir):  # claimed differently after all
                outcome.pier_trial_dir = str(pier_dir)
                layout.add_to_meta(trial_dir, {"pier_trial_dir": str(pier_dir)})
        except Exception as exc:  # the Pier copy must never lose the trial itself
            outcome.message = (outcome.message + "; " if outcome.message else "") + (
                f"(Pier jobs layout not written: {type(exc).__name__}: {exc})"
            )
        index.record_trials(self.results / "index.db", [outcome])
        try:
            self.state.config.hook.pytest_evalrun_trial_finished(
                outcome=outcome, trial_dir=trial_dir
            )
        except Exception as exc:  # a plugin's bug must not lose the trial
            warnings.warn(
                pytest.PytestWarning(
                    f"pytest_evalrun_trial_finished failed for {outcome.nodeid}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                stacklevel=1,
            )


def claim_lock(paths: RunPaths, variant: str, task: str, n: int) -> Path:
    key = hashlib.sha1(json.dumps([variant, task, n]).encode()).hexdigest()[:16]
    lock_dir = paths.run_dir / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    return lock_dir / f"{key}.lock"


def pier_job_name(paths: RunPaths) -> str:
    return f"{paths.run_id}__{paths.experiment}"


def open_pier_job(jobs: str, paths: RunPaths, exp: Experiment) -> PierJob:
    """The Pier job of one experiment run, named and seeded alike in every process."""
    from .store.pier import PierJob

    return PierJob(
        Path(jobs), pier_job_name(paths), run_id=paths.run_id, secrets=exp.secret_values
    )
