"""The standard layout's JSON records, typed: meta.json, run.json, summary.json and its verdict.

Plain :class:`~typing.TypedDict` declarations (checked by mypy; nothing is validated at run
time): what :mod:`pytest_evalrun.store.layout` returns when it reads the layout back, and what
the writers build (``report/summary.py`` and ``report/regression.py`` the summary,
``store/runs.py``, ``store/standard.py``, ``finish.py`` and ``store/merge.py`` run.json,
``store/trialdir.py`` meta.json from ``TrialOutcome.to_dict``). A key of a record here is
optional (``total=False``) where a record written by an older version, or cut short by a
crash, may lack it, so a reader of a file uses ``.get``. tests/test_layoutjson.py checks the
keys real sessions write against these declarations.
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


class MetricsRecord(TypedDict, total=False):
    """meta.json's ``metrics`` (``outcome.Metrics``): tokens and cost of the trial."""

    input_tokens: int | None
    output_tokens: int | None
    cache_tokens: int | None
    cost_usd: float | None
    model: str | None
    #: Where the figures came from: ``gateway``, ``cli``, ``self_reported`` (or None).
    source: str | None
    notes: list[str]
    #: The agent CLI's own report and the budget's state: free-form, the agent's words.
    cli: dict[str, Any] | None
    budget: dict[str, Any] | None


class MetaJson(TypedDict, total=False):
    """A trial's meta.json: the TrialOutcome's fields (``outcome.TrialOutcome.to_dict``, see
    that class for each field) plus ``schema_version``, ``success`` and ``steps``
    (``store/trialdir.py`` writes it)."""

    experiment: str
    variant: str
    task: str
    trial: int
    status: str
    experiment_slug: str
    variant_slug: str
    task_slug: str
    nodeid: str
    run_id: str
    reward: float | None
    rewards: dict[str, float]
    pass_threshold: float
    message: str
    error_kind: str | None
    failure_kind: str | None
    verify_tail: str
    trial_dir: str
    pier_trial_dir: str | None
    started_at: str
    finished_at: str
    duration: float
    setup_duration: float | None
    agent_duration: float | None
    verify_duration: float | None
    setup_exit: int | None
    agent_exit: int | None
    verify_exit: int | None
    seed: int
    model: str | None
    metrics: MetricsRecord
    session_id: str | None
    fingerprint: str
    resumed: bool
    crashed: bool
    worker: str | None
    attempt: int
    #: Earlier attempts of the trial: their outcomes' main fields (``trial/retry``).
    attempts: list[dict[str, Any]]
    #: The isolation the trial had (the sandbox's record: ``sandbox``, ``requested``, ...).
    isolation: dict[str, Any]
    schema_version: int
    success: bool
    steps: dict[str, StepRecord]


class GitState(TypedDict):
    """run.json's ``git``: the commit of the repository holding the experiment file and
    whether its tracked files had changes (both None outside a repository)."""

    commit: str | None
    dirty: bool | None


class EnvironmentInfo(TypedDict, total=False):
    """Where a run.json was (last) written: host and versions (``runs.environment_info``)."""

    host: str
    platform: str
    python: str
    pytest_evalrun: str | None
    pytest: str | None
    pytest_xdist: str | None


class Selection(TypedDict):
    """How many of the experiment's trials a session selected (a session's ``selection``)."""

    trials: int
    of: int


class RunSession(TypedDict, total=False):
    """One pytest session that ran (part of) a run: an entry of run.json's ``sessions``."""

    id: str
    started_at: str
    finished_at: str | None
    status: str
    pytest_args: list[str]
    #: ``--eval-shard K/N`` (absent when the session was not a shard).
    shard: str
    #: Variant name -> what its steps got (the ``isolation`` record of its trials' meta.json).
    isolation: dict[str, dict[str, Any]]
    selection: Selection
    #: The session's ``--eval-retry`` statuses.
    retry: list[str]


class RunPlan(TypedDict, total=False):
    """run.json's ``plan``: what a summary of the run needs besides its trials
    (``store.standard.experiment_plan`` writes it, ``finish.Plan`` reads it)."""

    variants: list[str]
    tasks: list[str]
    min_pass_rate: float | None
    task_min_pass_rate: dict[str, float | None]
    trials_per_task: dict[str, int]
    #: Variant name -> slug (runs recorded before 0.3 have none).
    variant_slugs: dict[str, str]


class BaselineRunGate(TypedDict, total=False):
    """run.json's ``gates.baseline_run``: ``--eval-baseline-run`` and the baseline's counts
    (``finish.RegressionGate.to_json``)."""

    ref: str
    run_id: str | None
    note: str | None
    notes: list[str]
    rerun_judged: int | None
    #: Variant slug -> task slug -> ``[passed, judged, errors]``.
    counts: dict[str, dict[str, list[int]]]


class RunGates(TypedDict, total=False):
    """run.json's ``gates``: every gate's inputs (``finish.Gates.to_json``)."""

    min_pass_rate: float | None
    baseline_variant: str | None
    alpha: float
    errors: str
    retry: list[str]
    baseline_run: BaselineRunGate | None


class MergedFrom(TypedDict):
    """An entry of a merged run.json's ``merged_from``: a shard directory and its shards."""

    source: str
    shards: list[str]
    total: int


class RunJson(EnvironmentInfo, total=False):
    """A run's run.json: its manifest and lifecycle (``store/runs.py`` writes it; ``evalrun
    merge`` writes a merged run's); with :class:`EnvironmentInfo`'s fields, of the last
    session's machine."""

    schema_version: int
    run_id: str
    experiment: str
    experiment_file: str
    status: str
    started_at: str
    finished_at: str | None
    updated_at: str
    #: Trials by status, resumed, crashed, total and not_run (``finish.run_counts``).
    counts: dict[str, int]
    sessions: list[RunSession]
    pytest_args: list[str]
    plan: RunPlan
    gates: RunGates
    git: GitState
    #: Variant name -> what its steps got in the last session.
    isolation: dict[str, dict[str, Any]]
    #: A merged run: every shard's host, sorted.
    hosts: list[str]
    merged_from: list[MergedFrom]


class Tokens(TypedDict):
    """Token counts of a group of trials (None: no trial of the group had the figure)."""

    input: int | None
    output: int | None
    cache: int | None


class SelfReported(TypedDict):
    """Figures the agents reported themselves, kept apart from measured ones."""

    tokens: Tokens
    cost_usd: float | None
    trials_with_metrics: int


class GroupFigures(TypedDict, total=False):
    """Counts, rates, tokens and cost of a group of trials: what a cell (variant x task) and
    a variant row of summary.json both hold (``report.summary._Acc.common``)."""

    trials: int
    #: Judged trials (passed + failed + timeout).
    n: int
    passed: int
    failed: int
    timeout: int
    errors: int
    error_kinds: dict[str, int]
    resumed: int
    pass_rate: float | None
    #: Wilson 95% interval ``[low, high]`` (None with no judged trial).
    wilson: list[float] | None
    mean_agent_duration: float | None
    tokens: Tokens
    cost_usd: float | None
    trials_with_metrics: int
    metrics_source: str | None
    self_reported: SelfReported | None


class CellGate(TypedDict, total=False):
    """A cell's gate and how it was judged."""

    threshold: float | None
    #: "task", "experiment", "cli" or None (no gate).
    source: str | None
    met: bool | None
    rate: float | None
    passed: int
    trials: int
    upper: float | None
    level: float
    p_value: float | None


class CellSummary(GroupFigures, total=False):
    """One variant x task of an experiment's ``cells``."""

    variant: str
    task: str
    #: k (as a string) -> pass@k (None when fewer than k judged trials).
    pass_at_k: dict[str, float | None]
    flaky: bool
    gate: CellGate


class VariantSummary(GroupFigures, total=False):
    """One variant of an experiment's ``variants``: over all its trials."""

    name: str
    k: int
    ci_level: float
    ci_these_tasks: list[float] | None
    ci_tasks_like_these: list[float] | None
    tasks_judged: int
    pass_at_k: dict[str, float | None]
    pass_at_k_tasks: dict[str, int]
    flaky_tasks: list[str]
    gate_failures: int


class TaskSummary(TypedDict, total=False):
    """One task of an experiment's ``tasks``: its trials and gate."""

    name: str
    trials: int | None
    min_pass_rate: float | None
    gate_source: str | None


class Comparison(TypedDict, total=False):
    """A variant against the experiment's baseline variant (``comparisons``)."""

    baseline: str
    variant: str
    tasks_paired: int
    tasks_excluded: list[str]
    baseline_pass_rate: float | None
    variant_pass_rate: float | None
    diff: float | None
    ci: list[float | None] | None
    confidence: float
    p_value: float | None
    p_worse: float | None
    sided: str
    wins: int
    losses: int
    ties: int
    method: str
    question: str
    errors: str
    weighting: str


class FlakyCell(TypedDict, total=False):
    """A cell with some trials passed and some not (``flaky``)."""

    variant: str
    task: str
    passed: int
    n: int


class GateRule(TypedDict, total=False):
    """How an experiment's cell gates are judged (``gate_rule``)."""

    rule: str
    alpha: float
    level: float
    cells: int
    errors: str


class Totals(TypedDict, total=False):
    """Trials of an experiment (or of every experiment: summary.json's ``totals``)."""

    trials: int
    judged: int
    passed: int
    failed: int
    timeout: int
    errors: int
    resumed: int
    retried: int
    rerun_judged: int
    not_run: int


class GateFailure(TypedDict, total=False):
    """A cell that failed its gate: an entry of a verdict's ``failures``."""

    experiment: str
    variant: str
    task: str
    pass_rate: float | None
    n: int
    errors: int
    threshold: float | None
    source: str | None
    gate_rate: float | None
    gate_passed: int
    gate_trials: int
    upper: float | None
    level: float


class Verdict(TypedDict, total=False):
    """A summary's (or one experiment's) ``verdict``: what the gates decided."""

    gated: bool
    passed: bool | None
    gated_cells: int
    failures: list[GateFailure]
    unjudged_variants: list[str]
    #: Variants the regression gate found worse (only when that gate applies).
    regressions: list[str]


class RegressionResultRecord(TypedDict, total=False):
    """One variant against the baseline run: the test's figures
    (``report.regression.RegressionResult.to_dict``)."""

    n_tasks: int
    base_rate: float | None
    cand_rate: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    regressed: bool
    min_detectable_drop: float | None
    method: str
    alpha: float
    p_two_sided: float | None


class RegressionVariant(RegressionResultRecord, total=False):
    """One variant of the regression section: its tasks, errors, test and verdict."""

    variant: str
    in_baseline: bool
    tasks_dropped: list[str]
    tasks_not_selected: list[str]
    errors: int
    baseline_errors: int
    tasks_paired: int
    p_adjusted: float | None
    significant: bool
    reasons: list[str]


class RegressionSection(TypedDict, total=False):
    """An experiment's ``regression``: the regression gate against a baseline run
    (``report.regression.regression_section``)."""

    baseline_run: str
    alpha: float
    errors: str
    test: str
    method: str
    question: str
    family: str
    variants_tested: int
    retry_mismatch: bool
    notes: list[str]
    variants: list[RegressionVariant]
    regressed: list[str]
    passed: bool


class ExperimentSummary(TypedDict, total=False):
    """One experiment of summary.json's ``experiments``."""

    name: str
    run_id: str
    results_dir: str
    jobs_dir: str | None
    min_pass_rate: float | None
    variants: list[VariantSummary]
    tasks: list[TaskSummary]
    pass_at_k_ks: list[int]
    cells: list[CellSummary]
    baseline: str | None
    comparisons: list[Comparison]
    flaky: list[FlakyCell]
    totals: Totals
    errors_policy: str
    gate_rule: GateRule
    verdict: Verdict
    #: The regression gate's section, when ``--eval-baseline-run`` applied.
    regression: RegressionSection
    notes: list[str]


class Summary(TypedDict, total=False):
    """summary.json: the session's (or a merged run's) totals, verdict and experiments."""

    schema_version: int
    cli_min_pass_rate: float | None
    baseline: str | None
    totals: Totals
    verdict: Verdict
    experiments: list[ExperimentSummary]
