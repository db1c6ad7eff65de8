"""One Pier job (Harbor ``jobs/<job>/``): the object the Pier recorder drives.

:class:`PierJob` ties the parts together: :class:`.files.JobFiles` (paths, lock, log),
:class:`.claims.TrialClaims` (trial directory names), :mod:`.config` (``config.json``),
:class:`.result.JobResultFile` (``result.json``, live then final) and :mod:`.trial` (one
trial's directory). Safe to use from several processes at once (xdist workers each construct
their own).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pytest_evalrun.experiment.model import Experiment, Task, Variant
from pytest_evalrun.outcome import TrialOutcome
from pytest_evalrun.store.atomic import write_json_atomic
from pytest_evalrun.store.pier.claims import TrialClaims
from pytest_evalrun.store.pier.config import job_config, merge_config
from pytest_evalrun.store.pier.files import JobFiles, json_or_none
from pytest_evalrun.store.pier.jobnames import safe_job_name
from pytest_evalrun.store.pier.jobstats import stats_entry
from pytest_evalrun.store.pier.links import LinkMode
from pytest_evalrun.store.pier.result import JobResultFile


class PierJob:
    """One Pier (Harbor ``jobs/``) job: ``<jobs_dir>/<safe job name>/``.

    ``run_id`` (default: ``job_name``) seeds the trial names; every process writing the same
    job must pass the same one (the first writer's is kept in ``.evalrun-job.json``).
    """

    def __init__(
        self,
        jobs_dir: Path,
        job_name: str,
        *,
        job_id: str | None = None,
        run_id: str | None = None,
        link_mode: LinkMode = "auto",
        secrets: Iterable[str] = (),
    ) -> None:
        self.requested_name = job_name
        self.files = JobFiles(Path(jobs_dir), safe_job_name(job_name))
        self.claims = TrialClaims(
            self.files, run_id if run_id is not None else job_name, job_name
        )
        self.result = JobResultFile(self.files, job_id)
        self.link_mode: LinkMode = link_mode
        self._secrets = tuple(secrets)

    # ------------------------------------------------------------------ names and paths

    @property
    def jobs_dir(self) -> Path:
        return self.files.jobs_dir

    @property
    def job_name(self) -> str:
        return self.files.job_name

    @property
    def job_dir(self) -> Path:
        return self.files.job_dir

    @property
    def config_path(self) -> Path:
        return self.files.config_path

    @property
    def result_path(self) -> Path:
        return self.files.result_path

    @property
    def pending_path(self) -> Path:
        return self.files.pending_path

    @property
    def run_id(self) -> str:
        return self.claims.run_id

    @property
    def job_id(self) -> str:
        return self.result.job_id

    def read_result(self) -> dict[str, Any] | None:
        """The job's result.json as it is now (None when missing or unreadable)."""
        return self.result.read()

    # ------------------------------------------------------------------ the job

    def ensure_config(
        self,
        *,
        experiments: Sequence[Experiment],
        n_total_trials: int,
        started_at: str,
        n_concurrent_trials: int | None = None,
        recompute_stats: bool = True,
    ) -> None:
        """Write config.json and, when missing, the initial result.json. Idempotent.

        On an existing job the job id and ``started_at`` are kept, the experiments' agents and
        datasets are merged into config.json and ``n_total_trials`` is updated. When the job
        had finished (a resumed run), ``finished_at`` is cleared and the stats are recomputed
        from the trial directories present (``recompute_stats=False`` skips that, for a caller
        that calls :meth:`finalize` right after). Every worker process may call it.
        """
        _ = self.run_id  # fix the naming run id before anything is written
        with self.files.lock():
            existed = self.result_path.exists()
            result = self.result.load_or_init_locked(
                started_at=started_at, n_total_trials=n_total_trials
            )
            resumed = existed and result.get("finished_at") is not None
            config = merge_config(
                job_config(self.job_name, self.jobs_dir, experiments, n_concurrent_trials),
                json_or_none(self.config_path),
                keep_concurrency=n_concurrent_trials is None,
            )
            write_json_atomic(self.config_path, config)
            if resumed:
                trials = [r for _, r in self._scan_trials()] if recompute_stats else None
                self.result.restart_locked(result, trials, n_total_trials)
            elif existed and result.get("n_total_trials") != n_total_trials:
                self.result.set_total_locked(result, n_total_trials)
        if not existed or resumed:
            self.files.log(
                f"job {'resumed' if resumed else 'started'}: {self.job_name} "
                f"id={self.job_id} n_total_trials={n_total_trials}"
            )

    def reopen_unchanged(self, *, n_total_trials: int, finished_at: str) -> bool:
        """A session that ran no trial of a finished job (every trial stood on resume): stamp
        the job finished again without re-reading its trials. False when that does not apply
        (not finished, or a different number of trials), and the caller should finalize."""
        result = self.result.reopen_finished(
            n_total_trials=n_total_trials, finished_at=finished_at
        )
        if result is None:
            return False
        self.files.log(f"job resumed: {self.job_name}: all {n_total_trials} trials stand")
        self._log_finished(result.get("stats") or {}, n_total_trials)
        return True

    def flush(self) -> None:
        """Fold every queued stats delta into result.json now."""
        with self.files.lock():
            self.result.fold_locked(force=True)

    def finalize(
        self,
        outcomes: Iterable[TrialOutcome],
        *,
        n_total_trials: int,
        finished_at: str,
        include_existing: bool = True,
    ) -> dict[str, Any]:
        """Recompute result.json from the trials and write it final (``finished_at`` set).

        Each outcome's trial result is read from its Pier trial directory; an outcome with
        none (e.g. a worker that crashed before writing) gets its directory written now
        from the outcome (and its standard trial dir, if any). With ``include_existing``,
        trial directories of this job that no outcome names (trials of an earlier session
        not selected this time) are kept in the stats too. Returns the JobResult written.
        """
        entries: list[dict[str, Any]] = []  # what the stats need of each trial: small
        seen: set[str] = set()
        by_suffix = self.claims.by_suffix()
        for outcome in outcomes:
            path = self.claims.find(outcome, by_suffix)
            data = json_or_none(path / "result.json")
            if not isinstance(data, dict):
                trial_dir = Path(outcome.trial_dir) if outcome.trial_dir else None
                data = self._write(path, outcome, trial_dir, None, None, None)
                write_json_atomic(path / "result.json", data)
            if path.name not in seen:
                seen.add(path.name)
                entries.append(stats_entry(data))
        if include_existing:
            for name, data in self._scan_trials(skip=seen):
                seen.add(name)
                entries.append(stats_entry(data))
        # By name, not by finishing order: the same trials give the same result.json, on one
        # machine or merged from shards (evalrun merge).
        entries.sort(key=lambda e: str(e["trial_name"]))
        result = self.result.write_final(
            entries, n_total_trials=n_total_trials, finished_at=finished_at
        )
        self._log_finished(result["stats"], result["n_total_trials"])
        return result

    def _log_finished(self, stats: dict[str, Any], total: int) -> None:
        self.files.log(
            f"job finished: {stats.get('n_completed_trials', 0)}/{total} trials, "
            f"{stats.get('n_errored_trials', 0)} with exceptions"
        )

    def _scan_trials(self, skip: set[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, TrialResult) of every trial directory of this job (but ``skip``), by name."""
        job_dir = str(self.files.job_dir)
        for name in self.files.trial_names():
            if skip is not None and name in skip:
                continue
            data = json_or_none(f"{job_dir}/{name}/result.json")
            if isinstance(data, dict) and "trial_name" in data:
                yield name, data

    # ------------------------------------------------------------------ trials

    def trial_dir_name(
        self,
        experiment: str,
        variant: str,
        task: str,
        trial: int,
        *,
        task_slug: str | None = None,
    ) -> str:
        """The trial's directory name, claiming it (collision-safe) on first use."""
        return self.claims.claim(experiment, variant, task, trial, task_slug).name

    def write_trial(
        self,
        outcome: TrialOutcome,
        *,
        trial_dir: Path | None,
        experiment: Experiment | None = None,
        variant: Variant | None = None,
        task: Task | None = None,
    ) -> Path:
        """Write the Pier trial directory from the standard trial dir and the outcome.

        Returns its path, and folds the trial into result.json (under the lock). A trial
        written again (a re-run, or a re-write) replaces its own directory and its previous
        contribution to the stats. ``experiment``/``variant``/``task`` enrich the config
        (timeouts, agent command, model); without them the outcome's names are used.
        """
        task_slug = outcome.task_slug or (task.slug if task else None) or outcome.task
        path = self.claims.claim(
            outcome.experiment, outcome.variant, outcome.task, outcome.trial, task_slug
        )
        result = self._write(path, outcome, trial_dir, experiment, variant, task)
        # result.json and its stats delta under one lock: whoever holds the lock sees every
        # trial result either folded into the job result or queued.
        with self.files.lock():
            previous = json_or_none(path / "result.json")
            write_json_atomic(path / "result.json", result)
            prev_entry = stats_entry(previous) if isinstance(previous, dict) else None
            self.result.queue_locked(stats_entry(result), prev_entry)
        reward = "-" if outcome.reward is None else f"{outcome.reward:g}"
        self.files.log(f"trial {path.name} finished: {outcome.status} reward={reward}")
        return path

    def _write(
        self,
        path: Path,
        outcome: TrialOutcome,
        trial_dir: Path | None,
        experiment: Experiment | None,
        variant: Variant | None,
        task: Task | None,
    ) -> dict[str, Any]:
        # a trial's Harbor files are written only when a trial runs (not by a resume)
        from pytest_evalrun.store.pier.trial import write_trial_dir

        return write_trial_dir(
            path,
            outcome,
            job_dir=self.job_dir,
            job_id=self.job_id,
            run_id=self.run_id,
            trial_dir=trial_dir,
            experiment=experiment,
            variant=variant,
            task=task,
            secrets=self._secrets,
            link_mode=self.link_mode,
        )
