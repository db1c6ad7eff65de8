"""The standard trial layout as a Recorder: run.json, variant.json, task.json, the summaries.

The trial directories themselves are written by the trial runner through
:class:`~pytest_evalrun.store.trialdir.TrialDir`; this recorder writes what describes and spans
them (see :mod:`.paths` for the tree).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..experiment.identity import definition_digest
from ..experiment.model import Experiment, Task, Variant
from ..layoutjson import EnvironmentInfo, GitState, RunPlan, Summary
from ..outcome import TrialOutcome
from ..report.markdown import render_markdown
from ..report.openmetrics import render_openmetrics
from ..secrets import Redactor
from . import runs
from .atomic import dumps, write_bytes_if_changed, write_json_atomic
from .paths import RunPaths
from .recorder import FinishedRun, Recorder, RunInfo
from .trialdir import TrialDir


def variant_record(variant: Variant) -> dict[str, Any]:
    return {
        "name": variant.name,
        "slug": variant.slug,
        "description": variant.description,
        "model": variant.model,
        "agent": variant.agent.describe(),
        "setup": variant.setup.describe() if variant.setup else None,
        "env": dict(variant.env),
        "definition": dict(variant.raw),
    }


def task_record(task: Task) -> dict[str, Any]:
    return {
        "name": task.name,
        "slug": task.slug,
        "description": task.description,
        "prompt": task.prompt,
        "prompt_file": str(task.prompt_file) if task.prompt_file else None,
        "fixture": str(task.fixture) if task.fixture else None,
        "verify": task.verify.describe(),
        "tags": list(task.tags),
        "trials": task.trials,
        "timeout": task.timeout,
        "setup_timeout": task.setup_timeout,
        "verify_timeout": task.verify_timeout,
        "pass_threshold": task.pass_threshold,
        "min_pass_rate": task.min_pass_rate,
        "env": dict(task.env),
    }


def write_summaries(paths: RunPaths, summary: Summary) -> None:
    """A run's summary.json, summary.md and metrics.txt, under the run lock (a concurrent
    resume may finish at the same time); a file that would not change is left as it is."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.lock)):
        write_bytes_if_changed(paths.summary_json, dumps(summary).encode(), fsync=True)
        write_bytes_if_changed(paths.summary_md, render_markdown(summary).encode())
        write_bytes_if_changed(paths.openmetrics, render_openmetrics(summary).encode())


def experiment_plan(exp: Experiment) -> RunPlan:
    """What a summary of the run needs besides its trials: names in file order, gates."""
    return {
        "variants": [v.name for v in exp.variants],
        "tasks": [t.name for t in exp.tasks],
        "min_pass_rate": exp.min_pass_rate,
        "task_min_pass_rate": {t.name: t.min_pass_rate for t in exp.tasks},
        "trials_per_task": {t.name: t.trials for t in exp.tasks},
        "variant_slugs": {v.name: v.slug for v in exp.variants},
    }


def _write_once(path: Path, data: dict[str, Any], redactor: Redactor) -> None:
    if not path.exists():
        write_json_atomic(path, redactor.redact_obj(data))


class StandardRecorder(Recorder):
    name = "standard layout"

    def __init__(self) -> None:
        self._described: set[tuple[str, str, str, str]] = set()
        self._git: GitState | None = None
        self._info: EnvironmentInfo | None = None

    def start_run(self, run: RunInfo) -> None:
        if self._git is None:
            self._git = runs.git_state(run.experiment.directory)
            self._info = runs.environment_info()
        runs.start_run(
            run.paths,
            experiment=run.experiment.name,
            experiment_file=str(run.experiment.path),
            session_id=run.session_id,
            pytest_args=list(run.pytest_args),
            git=self._git,
            info=self._info or runs.environment_info(),
            plan=experiment_plan(run.experiment),
            shard=run.shard,
            isolation=run.isolation or None,
            selection={"trials": run.n_total_trials, "of": run.experiment.n_items},
            retry=run.retry,
        )

    def begin_trial(
        self, run: RunInfo, variant: Variant, task: Task, trial: int
    ) -> Mapping[str, Any]:
        key = (run.paths.experiment, run.paths.run_id, variant.slug, task.slug)
        if key not in self._described:
            paths = run.paths
            _write_once(
                paths.variant_dir(variant.slug) / "variant.json",
                variant_record(variant),
                run.redactor,
            )
            record = task_record(task)
            record["definition"] = definition_digest(variant, task, run.redactor)
            _write_once(paths.task_dir(variant.slug, task.slug) / "task.json", record, run.redactor)
            self._described.add(key)
        return {}

    def relabel(self, run: RunInfo, outcome: TrialOutcome, labels: Mapping[str, Any]) -> None:
        TrialDir(Path(outcome.trial_dir), run.redactor).update_meta(labels)

    def record_crash(self, run: RunInfo, outcome: TrialOutcome) -> None:
        TrialDir(Path(outcome.trial_dir), run.redactor).record_outcome(outcome)

    def finish_run(self, finished: FinishedRun) -> None:
        paths = finished.run.paths
        write_summaries(paths, finished.summary)
        if not finished.ran:
            return
        finished.notes["run"] = runs.finish_run(
            paths,
            session_id=finished.run.session_id,
            status=finished.status,
            counts=finished.counts,
            pytest_args=list(finished.run.pytest_args),
            gates=finished.gates,
        )
