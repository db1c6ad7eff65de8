"""The Recorder interface: one object per on-disk format, all fed the same events.

The standard layout (:mod:`.standard`), the SQLite index (:mod:`.index`) and the Harbor jobs
layout (:mod:`.pier.recorder`) are recorders; a plugin adds another through the
``pytest_evalrun_recorders`` hook. The worker role calls ``start_run``, ``begin_trial`` and
``record_trial``; the controller role calls ``record_crash`` and ``finish_run``. With xdist each
process has its own recorder objects, so a recorder keeps no state another process needs.

A recorder that is not ``essential`` may fail without losing the trial: its error becomes part
of the trial's message (the trial itself is on disk already, in the standard layout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..experiment.model import Experiment, Task, Variant
from ..layoutjson import RunGates, Summary
from ..outcome import TrialOutcome
from ..secrets import Redactor
from .paths import RunPaths


@dataclass(frozen=True)
class RunInfo:
    """One experiment's run, as every process sees it."""

    experiment: Experiment
    paths: RunPaths
    jobs: Path
    session_id: str
    #: When the session started (the controller's clock).
    started_at: str
    #: The session's command line, secrets masked.
    pytest_args: Sequence[str]
    #: Trial items of this experiment the session runs (as far as this process knows).
    n_total_trials: int
    #: Masks the experiment's secrets.
    redactor: Redactor
    #: How many trials run at once (xdist workers).
    n_concurrent: int = 1
    #: --eval-shard of this session ("K/N"), or "".
    shard: str = ""
    #: The isolation this session gives each variant's steps (variant name -> the
    #: ``isolation`` record of its trials' meta.json); {} when unknown.
    isolation: Mapping[str, Any] = field(default_factory=dict)
    #: --eval-retry of this session (the statuses that run again), () without.
    retry: Sequence[str] = ()


@dataclass
class FinishedRun:
    """What the controller knows of a run at the end of the session."""

    run: RunInfo
    outcomes: list[TrialOutcome]
    #: This run's summary (summary.json's content).
    summary: Summary
    #: run.json's status for this session: completed, interrupted or failed.
    status: str
    counts: dict[str, int]
    #: False when the session neither ran nor found any trial of it (nothing to finish).
    ran: bool = True
    #: Every gate's inputs (``finish.Gates.to_json()``), recorded in run.json's ``gates``.
    gates: RunGates | None = None
    #: Filled by the recorders for the ones after them (e.g. run.json's content).
    notes: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Base class: every method is optional."""

    name = "recorder"
    essential = True

    def start_run(self, run: RunInfo) -> None:
        """Before this process records the run's first trial (once per process and run)."""

    def begin_trial(
        self, run: RunInfo, variant: Variant, task: Task, trial: int
    ) -> Mapping[str, Any]:
        """Before a trial runs, under its claim lock: TrialOutcome fields to record with it
        (e.g. the name this format gives the trial)."""
        return {}

    def record_trial(
        self, run: RunInfo, outcome: TrialOutcome, variant: Variant, task: Task
    ) -> Mapping[str, Any]:
        """A trial finished (in the process that ran it). Returns outcome fields that changed
        since ``begin_trial``, for the other recorders' ``relabel``."""
        return {}

    def relabel(self, run: RunInfo, outcome: TrialOutcome, labels: Mapping[str, Any]) -> None:
        """Another recorder changed some of the trial's fields after it was recorded."""

    def record_crash(self, run: RunInfo, outcome: TrialOutcome) -> None:
        """The worker running a trial died; ``outcome`` is its ``error`` record (controller)."""

    def finish_run(self, finished: FinishedRun) -> None:
        """The session ends (controller): write what spans the run's trials."""


class Recorders:
    """Calls every recorder in order; a non-essential one's failure is noted, not raised."""

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self.recorders = list(recorders)
        self._started: set[tuple[str, str]] = set()

    def __iter__(self) -> Any:
        return iter(self.recorders)

    def _guard(self, recorder: Recorder, problems: list[str], call: Any, *args: Any) -> Any:
        if recorder.essential:
            return call(*args)
        try:
            return call(*args)
        except Exception as exc:
            problems.append(f"({recorder.name} not written: {type(exc).__name__}: {exc})")
            return None

    def start_run(self, run: RunInfo) -> None:
        key = (run.paths.experiment, run.paths.run_id)
        if key in self._started:
            return
        for recorder in self.recorders:
            # a problem here shows again (and is reported) when the trial is recorded
            self._guard(recorder, [], recorder.start_run, run)
        self._started.add(key)

    def begin_trial(self, run: RunInfo, variant: Variant, task: Task, trial: int) -> dict[str, Any]:
        labels: dict[str, Any] = {}
        for recorder in self.recorders:
            labels.update(
                self._guard(recorder, [], recorder.begin_trial, run, variant, task, trial) or {}
            )
        return labels

    def record_trial(
        self, run: RunInfo, outcome: TrialOutcome, variant: Variant, task: Task
    ) -> None:
        problems: list[str] = []
        changed: dict[str, Any] = {}
        for recorder in self.recorders:
            call = recorder.record_trial
            changed.update(self._guard(recorder, problems, call, run, outcome, variant, task) or {})
        if problems:
            parts = [outcome.message, *problems] if outcome.message else problems
            changed["message"] = "; ".join(parts)
        if changed:
            for name, value in changed.items():
                setattr(outcome, name, value)
            for recorder in self.recorders:
                self._guard(recorder, [], recorder.relabel, run, outcome, changed)

    def record_crash(self, run: RunInfo, outcome: TrialOutcome) -> None:
        for recorder in self.recorders:
            self._guard(recorder, [], recorder.record_crash, run, outcome)

    def finish_run(self, finished: FinishedRun) -> list[str]:
        problems: list[str] = []
        for recorder in self.recorders:
            self._guard(recorder, problems, recorder.finish_run, finished)
        return problems
