"""Experiment files become collectors; every variant x task x trial becomes a TrialItem.

Node ids are structured and bracket-free so that node-id selection, ``-k`` and ``--lf`` work on
every pytest version (pytest#15045): ``<file>::<variant>::<task>::trial-<NNN>``, where variant and
task are the names' slugs. ``-k`` also matches the original names. They are built and parsed
here only (:class:`TrialId`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .context import context_of
from .experiment.errors import ExperimentError
from .experiment.model import Experiment, Task, Variant
from .outcome import ERROR, USER_PROPERTY, TrialOutcome
from .safetext import bounded, escape
from .store.paths import trial_number

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

#: Key under which a broken experiment file's error travels in ``report.user_properties``.
EXPERIMENT_ERROR_PROPERTY = "evalrun_spec_error"
_TRIAL_PREFIX = "trial-"


def trial_item_name(n: int) -> str:
    return f"{_TRIAL_PREFIX}{trial_number(n)}"


@dataclass(frozen=True)
class TrialId:
    """The parts of a trial item's node id: ``<file>::<variant>::<task>::trial-<NNN>``."""

    file: str
    variant: str  # slug
    task: str  # slug
    trial: int

    @property
    def nodeid(self) -> str:
        return f"{self.file}::{self.variant}::{self.task}::{trial_item_name(self.trial)}"

    @classmethod
    def parse(cls, nodeid: str) -> TrialId | None:
        """The parts of a trial's node id; None for any other node id."""
        parts = nodeid.split("::")
        if len(parts) != 4 or not parts[0].endswith((".yaml", ".yml")):
            return None
        number = parts[3].removeprefix(_TRIAL_PREFIX)
        if number == parts[3] or not number.isdigit():
            return None
        return cls(parts[0], parts[1], parts[2], int(number))


def is_trial_nodeid(nodeid: str) -> bool:
    return TrialId.parse(nodeid) is not None


class TrialProblem(Exception):
    """Raised by a TrialItem whose trial did not pass; carries the outcome."""

    def __init__(self, outcome: TrialOutcome) -> None:
        super().__init__(outcome.message or outcome.status)
        self.outcome = outcome


class ExperimentProblem(Exception):
    """Raised by the item standing in for an experiment file that failed to load."""


#: The output tail shown of a trial that did not pass: at most this many lines (and, like every
#: section, :data:`pytest_evalrun.safetext.MAX_SECTION` characters).
TAIL_LINES_SHOWN = 30


def describe_reused(outcome: TrialOutcome) -> str:
    """One line for a trial an earlier session recorded and ``--eval-resume`` reused: its
    detail was shown then (and ``evalrun show`` shows it again), not at every resume."""
    head = f"{outcome.status.upper()} (recorded earlier, reused): {outcome.variant} / "
    head += f"{outcome.task} / trial {outcome.trial}"
    first = (outcome.message or "").strip().split("\n", 1)[0][:300]
    return escape(f"{head}: {first}" if first else head) + f" ({escape(outcome.trial_dir)})"


def describe(outcome: TrialOutcome) -> str:
    """What a person needs first about a trial that did not pass. Everything the agent or the
    verifier wrote is escaped and bounded (:mod:`pytest_evalrun.safetext`)."""
    if outcome.resumed:
        return describe_reused(outcome)
    lines = [
        escape(
            f"{outcome.status.upper()}: {outcome.variant} / {outcome.task} / trial {outcome.trial}"
        )
    ]
    if outcome.message:
        lines.append(bounded(outcome.message))
    if outcome.reward is not None:
        lines.append(f"reward: {outcome.reward:g} (pass threshold {outcome.pass_threshold:g})")
    if outcome.verify_tail:
        lines.append("--- output (tail) ---")
        lines.append(bounded(outcome.verify_tail.rstrip("\n"), max_lines=TAIL_LINES_SHOWN))
        lines.append("---")
    lines.append(f"trial directory: {escape(outcome.trial_dir)}")
    return "\n".join(lines)


class ExperimentFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        spec = context_of(self.config).discovery.load(self.path)
        if isinstance(spec, ExperimentError):
            yield ExperimentErrorItem.from_parent(self, name="experiment-file-error", error=spec)
            return
        self.experiment = spec
        _register_markers(self.config, {tag for task in spec.tasks for tag in task.tags})
        for variant in spec.variants:
            yield VariantNode.from_parent(self, name=variant.slug, experiment=spec, variant=variant)


def _register_markers(config: pytest.Config, tags: set[str]) -> None:
    known = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    for tag in sorted(tags - known):
        config.addinivalue_line("markers", f"{tag}: task tag (pytest-evalrun)")


class VariantNode(pytest.Collector):
    def __init__(self, *, experiment: Experiment, variant: Variant, **kw: Any) -> None:
        super().__init__(**kw)
        self.experiment = experiment
        self.variant = variant
        if variant.name != variant.slug:
            self.extra_keyword_matches.add(variant.name)

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        for task in self.experiment.tasks:
            yield TaskNode.from_parent(
                self, name=task.slug, experiment=self.experiment, variant=self.variant, task=task
            )


class TaskNode(pytest.Collector):
    def __init__(self, *, experiment: Experiment, variant: Variant, task: Task, **kw: Any) -> None:
        super().__init__(**kw)
        self.experiment = experiment
        self.variant = variant
        self.task = task
        if task.name != task.slug:
            self.extra_keyword_matches.add(task.name)
        for tag in task.tags:
            self.add_marker(tag)

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        for n in range(1, self.task.trials + 1):
            yield TrialItem.from_parent(self, name=trial_item_name(n), trial=n)


class TrialItem(pytest.Item):
    parent: TaskNode

    def __init__(self, *, trial: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.trial = trial
        self.outcome: TrialOutcome | None = None

    @property
    def experiment(self) -> Experiment:
        return self.parent.experiment

    @property
    def variant(self) -> Variant:
        return self.parent.variant

    @property
    def task(self) -> Task:
        return self.parent.task

    def setup(self) -> None:
        context = context_of(self.config)
        runner = context.runner
        assert runner is not None, "trial items run only where the worker role is registered"
        spent = runner.budget_spent()
        if spent is not None:
            pytest.skip(spent)
        outcome = runner.run_trial_item(
            self.nodeid, self.experiment, self.variant, self.task, self.trial
        )
        self.user_properties.append((USER_PROPERTY, self.hand_over(outcome)))
        if outcome.status == ERROR:
            raise TrialProblem(outcome)

    def hand_over(self, outcome: TrialOutcome) -> dict[str, Any]:
        """Take ``outcome`` as this trial's; its dict, which the setup report carries to the
        controller (handed over directly where this process is the controller)."""
        self.outcome = outcome
        data = outcome.to_dict()
        context = context_of(self.config)
        if context.worker_id is None:  # this process is also the controller
            context.handed[self.nodeid] = (data, outcome)
        return data

    def runtest(self) -> None:
        assert self.outcome is not None
        if not self.outcome.passed:
            raise TrialProblem(self.outcome)

    def teardown(self) -> None:
        # The setup report carried the outcome's dict to the controller: keep no copy to
        # the session's end (one per trial)
        self.user_properties[:] = [p for p in self.user_properties if p[0] != USER_PROPERTY]

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, TrialProblem):
            return describe(excinfo.value.outcome)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return (
            self.path,
            max(self.task.line - 1, 0),
            escape(f"{self.variant.name} / {self.task.name} / trial {self.trial}"),
        )


class ExperimentErrorItem(pytest.Item):
    """Stands in for a broken experiment file: fails with the file:line error, alone, so that
    the other files' trials still run (serially and under xdist)."""

    def __init__(self, *, error: ExperimentError, **kw: Any) -> None:
        super().__init__(**kw)
        self.error = error

    def setup(self) -> None:
        self.user_properties.append((EXPERIMENT_ERROR_PROPERTY, str(self.error)))
        raise ExperimentProblem(str(self.error))

    def runtest(self) -> None:  # pragma: no cover - setup always raises
        raise ExperimentProblem(str(self.error))

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        return bounded(excinfo.value)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.error.line
        return self.path, (line - 1) if line else None, "experiment file error"
