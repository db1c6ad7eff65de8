"""TrialOutcome: the JSON-able record of one trial that every later stage reads.

A worker produces it, it crosses to the xdist controller as plain data in the report's
``user_properties``, and the reporters (terminal, summary, JUnit, index, Pier job result) read
only outcomes, never trial directories.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

PASSED = "passed"
FAILED = "failed"
TIMEOUT = "timeout"
ERROR = "error"
#: Statuses that count in the pass rate (judged trials). ``error`` is reported apart.
JUDGED = frozenset({PASSED, FAILED, TIMEOUT})

#: Where a trial's tokens and cost came from, as reports name it: ``gateway`` and ``cli``
#: (measured by the plugin: its model gateway, a preset CLI's own records read after it
#: exited) and ``self_reported`` (the agent's own word; also every source of runs recorded
#: before 0.3.0: ``otel``, ``agent-metrics``).
MEASURED_SOURCES = ("gateway", "cli")


def metrics_source(source: str | None) -> str | None:
    """``source`` of a :class:`Metrics` as reports name it (see :data:`MEASURED_SOURCES`)."""
    if source is None:
        return None
    return source if source in MEASURED_SOURCES else "self_reported"


#: Key under which an outcome travels in ``report.user_properties``.
USER_PROPERTY = "evalrun_outcome"


@dataclass
class Metrics:
    """Economics of one trial, when known."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_tokens: int | None = None
    cost_usd: float | None = None
    model: str | None = None
    #: Where the numbers came from: ``gateway`` (counted by the plugin's model gateway from the
    #: model API's own responses), ``cli`` (a preset CLI's own records, read by the plugin),
    #: ``self_reported`` (whatever the agent wrote: its metrics.json or OpenTelemetry files),
    #: or None.
    source: str | None = None
    #: Values the agent's records gave that could not be used (not a finite, non-negative
    #: number, or a file that is not a regular file, or too large): each left out, said here.
    notes: list[str] = field(default_factory=list)
    #: With ``source: gateway``: the CLI's own figures beside (input_tokens, output_tokens,
    #: cache_tokens, cost_usd, model_calls) and ``difference`` (a sentence, None when equal).
    cli: dict[str, Any] | None = None
    #: The trial's ``budget:`` (limits) and ``stopped``: what of it ended the agent's model
    #: calls (None when it did not).
    budget: dict[str, Any] | None = None


@dataclass
class TrialOutcome:
    experiment: str
    variant: str
    task: str
    trial: int
    status: str
    experiment_slug: str = ""
    variant_slug: str = ""
    task_slug: str = ""
    nodeid: str = ""
    run_id: str = ""
    #: Main reward (verify's reward file, else 1.0/0.0 from its exit code); None when unjudged.
    reward: float | None = None
    rewards: dict[str, float] = field(default_factory=dict)
    pass_threshold: float = 1.0
    #: One line a person reads first: why it failed or errored.
    message: str = ""
    #: Short machine tag for errors (the harness or the infrastructure failed before the
    #: agent's work could be judged): setup_failed, agent_missing, verify_missing (the verify
    #: program is not in the experiment), sandbox, no_model_call (a preset's CLI never got an
    #: answer from its model API: refusing the credentials, not logged in, failing),
    #: model_unreachable (its model endpoint accepts no connection), replay_unmatched
    #: (``--eval-replay``: a model call with no recorded answer),
    #: worker_crashed, workspace (the fixture could not be copied or snapshotted), interrupted
    #: (Ctrl-C / SIGTERM while it ran), internal (our own bug).  0.2.0 also wrote
    #: verify_crashed and verify_timeout here; those are judged failures now
    #: (:attr:`failure_kind`).
    error_kind: str | None = None
    #: Why a ``failed`` trial failed: verify_rejected (verify exited non-zero), below_threshold
    #: (its reward was below the pass threshold), verify_timeout, verify_crashed (killed by a
    #: signal, or a ``python:`` verifier raised), verify_bad_reward (a reward that is not a
    #: finite number), verify_missing (the program verify starts was in the workspace and the
    #: agent removed it). None for other statuses.
    failure_kind: str | None = None
    verify_tail: str = ""
    trial_dir: str = ""
    pier_trial_dir: str | None = None
    started_at: str = ""
    finished_at: str = ""
    duration: float = 0.0
    setup_duration: float | None = None
    agent_duration: float | None = None
    verify_duration: float | None = None
    setup_exit: int | None = None
    agent_exit: int | None = None
    verify_exit: int | None = None
    seed: int = 0
    model: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    #: The agent's own session id, when its records name one (a preset's metrics.json).
    session_id: str | None = None
    fingerprint: str = ""
    #: True when the outcome was recorded by an earlier session and reused by --eval-resume.
    resumed: bool = False
    #: True when the worker running it died.
    crashed: bool = False
    worker: str | None = None
    #: Which attempt this is (1 unless the trial ran before: ``retries``, ``--eval-retry``,
    #: an ``error`` or changed trial run again by ``--eval-resume``).
    attempt: int = 1
    #: The earlier attempts, oldest first: attempt, status, error_kind, message, started_at,
    #: finished_at, and why the next one ran (``rerun_reason``). Their files are kept in the
    #: trial directory's ``attempts/<k>/``.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: The isolation the trial really had (``sandbox``: ``bwrap`` or ``none``, ``requested``,
    #: ``network``, ``bwrap``, ``bwrap_version``, ``reason``); {} when it never started a step.
    isolation: dict[str, Any] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        return self.status in JUDGED

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def rerun_judged(self) -> bool:
        """Was a judged attempt of this trial run again (``--eval-retry failed,timeout``)?
        Reports say so: retrying failures biases a pass rate upward."""
        return any(a.get("status") in JUDGED for a in self.attempts)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.experiment, self.variant, self.task, self.trial)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-like data (a shallow build: every field is a scalar but four)."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["rewards"] = dict(self.rewards)
        data["isolation"] = dict(self.isolation)
        data["attempts"] = [dict(a) for a in self.attempts]
        data["metrics"] = {name: getattr(self.metrics, name) for name in _METRIC_FIELDS}
        data["metrics"]["notes"] = list(self.metrics.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialOutcome:
        kwargs = {k: v for k, v in data.items() if k in _FIELD_SET}
        metrics = kwargs.get("metrics")
        if isinstance(metrics, dict):
            kwargs["metrics"] = Metrics(
                **{k: v for k, v in metrics.items() if k in _METRIC_FIELD_SET}
            )
        elif metrics is None:
            kwargs.pop("metrics", None)
        if cls is not TrialOutcome or not kwargs.keys() >= _REQUIRED:
            return cls(**kwargs)  # (a missing field: the TypeError the record's readers catch)
        # What __init__ would do, without its 40 keyword arguments (--eval-resume reads
        # thousands): every field in order, the given values over the defaults.
        outcome = cls.__new__(cls)
        values = {**_DEFAULTS, **kwargs}
        for name, factory in _FACTORIES:
            if name not in kwargs:
                values[name] = factory()
        outcome.__dict__.update(values)
        return outcome


_FIELDS = tuple(f.name for f in fields(TrialOutcome))
_FIELD_SET = frozenset(_FIELDS)
_REQUIRED = frozenset(
    f.name for f in fields(TrialOutcome) if f.default is MISSING and f.default_factory is MISSING
)
#: Every field, in order, with its default (None for the required ones, always given).
_DEFAULTS: dict[str, Any] = {
    f.name: None if f.default is MISSING else f.default for f in fields(TrialOutcome)
}
_FACTORIES = tuple(
    (f.name, f.default_factory) for f in fields(TrialOutcome) if f.default_factory is not MISSING
)
_METRIC_FIELDS = tuple(f.name for f in fields(Metrics))
_METRIC_FIELD_SET = frozenset(_METRIC_FIELDS)
