"""The standard layout's JSON records, typed: meta.json, run.json, summary.json and its verdict.

Plain :class:`~typing.TypedDict` declarations (checked by mypy; nothing is validated at run
time): what :mod:`pytest_evalrun.store.layout` returns when it reads the layout back, and what
the writers (``store/trialdir.py``, ``store/runs.py``, ``report/summary.py``) produce. Every
key is optional (``total=False``): a record written by an older version, or cut short by a
crash, may lack any of them, so a reader uses ``.get``.
"""

from __future__ import annotations

from typing import Any, TypedDict


class StepRecord(TypedDict, total=False):
    """One step of a trial as meta.json's ``steps`` records it (``trial/run.py`` writes it)."""

    kind: str
    exit_code: int | None
    timed_out: bool
    duration: float
    start_error: str | None
    timeout: float
    #: How many processes the step left behind (other than its direct child) that were
    #: killed when it ended.
    killed_leftovers: int
    #: Bytes of the step's output left out at the output cap (0: all kept).
    output_cut: int
    isolation_failed: bool
    infra_error: str


class MetaJson(TypedDict, total=False):
    """A trial's meta.json: the TrialOutcome's fields plus ``schema_version``, ``success`` and
    ``steps`` (see ``outcome.TrialOutcome`` for each field)."""

    schema_version: int
    success: bool
    steps: dict[str, StepRecord]
    experiment: str
    variant: str
    task: str
    trial: int
    status: str
    run_id: str
    nodeid: str
    reward: float | None
    rewards: dict[str, float]
    message: str
    error_kind: str | None
    trial_dir: str
    pier_trial_dir: str | None
    started_at: str
    finished_at: str
    duration: float
    seed: int
    fingerprint: str
    model: str | None
    metrics: dict[str, Any]
    attempt: int
    attempts: list[dict[str, Any]]


class RunJson(TypedDict, total=False):
    """A run's run.json: its manifest and lifecycle (``store/runs.py`` writes it)."""

    schema_version: int
    run_id: str
    experiment: str
    experiment_file: str
    status: str
    started_at: str
    finished_at: str | None
    updated_at: str
    counts: dict[str, int]
    sessions: list[dict[str, Any]]
    pytest_args: list[str]
    plan: dict[str, Any]
    gates: dict[str, Any]
    git: dict[str, Any]
    isolation: dict[str, Any]
    merged_from: list[dict[str, Any]]


class Verdict(TypedDict, total=False):
    """A summary's (or one experiment's) ``verdict``: what the gates decided."""

    gated: bool
    passed: bool | None
    gated_cells: int
    failures: list[dict[str, Any]]
    unjudged_variants: list[str]
    regressions: list[str]


class ExperimentSummary(TypedDict, total=False):
    """One experiment of summary.json's ``experiments``."""

    name: str
    run_id: str
    results_dir: str
    jobs_dir: str | None
    min_pass_rate: float | None
    variants: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    totals: dict[str, int]
    verdict: Verdict
    regression: dict[str, Any]
    notes: list[str]


class Summary(TypedDict, total=False):
    """summary.json: the session's (or a merged run's) totals, verdict and experiments."""

    schema_version: int
    cli_min_pass_rate: float | None
    baseline: str | None
    totals: dict[str, int]
    verdict: Verdict
    experiments: list[ExperimentSummary]
