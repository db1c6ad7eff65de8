"""The run summary: one JSON-able dict, the content of summary.json.

:func:`build_summary` is a pure function over :class:`~pytest_evalrun.outcome.TrialOutcome`
records; :func:`combine_summaries` joins summaries of different experiments into one without
recomputing anything. The renderers (:mod:`.markdown`, :mod:`.openmetrics`, :mod:`.terminal`)
are pure functions over the dict (so they also work on a summary.json read back from disk).

Counting rules (docs/reports.md says them for users):

- ``passed``, ``failed`` and ``timeout`` trials are *judged*; the pass rate of a variant x task
  is passed / judged. ``error`` trials are counted apart and never in a pass rate.
- ``resumed`` counts trials reused from an earlier session (any status).
- If the same (experiment, variant, task, trial) appears more than once, the last one wins.

Gates:

- The threshold of a variant x task is the task's ``min_pass_rate`` when set, else the
  experiment's (the task value overrides the experiment value, up or down).
- ``--eval-min-pass-rate X`` applies to every variant x task of every experiment *in addition*:
  when both a file threshold and the CLI value apply, the cell must meet the stricter (the
  larger) of the two. The CLI option can therefore only tighten a file's gate, never loosen it.
- A gated cell is judged with its uncertainty: it fails when the exact (Clopper-Pearson)
  one-sided upper confidence bound of its pass rate lies below its threshold, at level
  ``1 - alpha / m`` for the experiment's ``m`` gated cells (Bonferroni), so that a run whose
  every cell truly meets its gate fails in at most ``alpha`` of runs (default 0.05). Equivalently
  the exact binomial test of "rate >= threshold" has ``p < alpha / m``. Under the error policy
  ``count`` (the default) the cell's trials are its judged trials plus its errors, each error a
  trial that did not pass; under ``exclude`` only judged trials. A gate of 1.0 fails on any
  trial that did not pass. A cell with no judged trial (only errors, or nothing run) fails.
- When any cell is gated (or a regression gate applies), the verdict passes exactly when every
  gated cell meets its gate, no variant regressed and every variant has a judged trial;
  when nothing is gated, ``gated`` is False and ``passed`` is None.

Statistics (docs/reports.md): each variant's pass rate has two labelled 95% intervals, one for
*these tasks* (``ci_these_tasks``, Wilson over the trials; also kept as ``wilson``) and one for
*tasks like these* (``ci_tasks_like_these``, clustered by task), both around ``pass_rate``.
Variants are compared with the regression gate's test
(:func:`.regression.compare_variant`: per-task rates weighted by trials, exact stratified
permutation test, two-sided ``p_value`` plus the one-sided ``p_worse``), on the same counts the
gates use (errors per the policy).

Ordering is deterministic: experiments, variants and tasks in the order the metadata gives;
names found only in outcomes come after, sorted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from ..layoutjson import (
    CellGate,
    CellSummary,
    Comparison,
    ExperimentSummary,
    GateFailure,
    GroupFigures,
    RegressionSection,
    SelfReported,
    Summary,
    TaskSummary,
    Tokens,
    Totals,
    VariantSummary,
    Verdict,
)
from ..outcome import FAILED, PASSED, TIMEOUT, Metrics, TrialOutcome, metrics_source
from .policy import ERROR_POLICIES, ERRORS_COUNT, ERRORS_EXCLUDE
from .regression import QUESTION_THESE_TASKS, TaskCounts, compare_variant, gate_counts
from .stats import binom_cdf, binom_upper_bound, clustered_interval, pass_at_k, wilson_interval

__all__ = [
    "SCHEMA_VERSION",
    "ExperimentMeta",
    "apply_regression",
    "build_summary",
    "combine_summaries",
]

SCHEMA_VERSION = 1
_GATE_TOLERANCE = 1e-12
#: Level of the reported intervals.
CONFIDENCE = 0.95
#: How a cell's gate is judged (summary.json ``gate_rule.rule``).
GATE_RULE = (
    "fails when the exact one-sided upper confidence bound of the cell's pass rate, at level "
    "1 - alpha/m for the m gated cells (Bonferroni), lies below its minimum"
)


@dataclass(frozen=True)
class ExperimentMeta:
    """What the summary needs to know about one experiment beyond its outcomes."""

    name: str
    #: Variant names in file order.
    variants: Sequence[str] = ()
    #: Task names in file order.
    tasks: Sequence[str] = ()
    #: Experiment-level gate (``min_pass_rate`` at the top of the file), or None.
    min_pass_rate: float | None = None
    #: Task-level gates: task name -> ``min_pass_rate`` (None or absent: use the experiment's).
    task_min_pass_rate: Mapping[str, float | None] = field(default_factory=dict)
    #: Trials per task (after per-task overrides): task name -> count.
    trials_per_task: Mapping[str, int] = field(default_factory=dict)
    run_id: str = ""
    #: Where this experiment's run was written (standard layout), as a path string.
    results_dir: str = ""
    #: Where the Pier jobs layout was written, if at all.
    jobs_dir: str | None = None


# --------------------------------------------------------------------------------------------
# Building


@dataclass
class _Figures:
    """Tokens and cost of some trials of a group."""

    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    cache_tokens: list[int] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    with_metrics: int = 0

    def add(self, m: Metrics) -> bool:
        """Count ``m``'s figures; whether it had any."""
        known = False
        if m.input_tokens is not None:
            self.input_tokens.append(int(m.input_tokens))
            known = True
        if m.output_tokens is not None:
            self.output_tokens.append(int(m.output_tokens))
            known = True
        if m.cache_tokens is not None:
            self.cache_tokens.append(int(m.cache_tokens))
            known = True
        if m.cost_usd is not None and math.isfinite(m.cost_usd) and m.cost_usd >= 0:
            self.costs.append(float(m.cost_usd))
            known = True
        if known:
            self.with_metrics += 1
        return known

    def tokens(self) -> Tokens:
        return {
            "input": sum(self.input_tokens) if self.input_tokens else None,
            "output": sum(self.output_tokens) if self.output_tokens else None,
            "cache": sum(self.cache_tokens) if self.cache_tokens else None,
        }

    def cost(self) -> float | None:
        return math.fsum(self.costs) if self.costs else None


@dataclass
class _Acc:
    """Accumulates the outcomes of one group (a cell, or a variant overall)."""

    trials: int = 0
    passed: int = 0
    failed: int = 0
    timeout: int = 0
    errors: int = 0
    resumed: int = 0
    #: trials whose outcome is not their first attempt (retries, --eval-retry, reruns)
    retried: int = 0
    #: trials with an earlier judged attempt that was run again (--eval-retry failed,...)
    rerun_judged: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    agent_durations: list[float] = field(default_factory=list)
    #: Tokens and cost measured by the plugin (gateway, cli), and those the agents reported
    #: themselves (self_reported): never summed together.
    measured: _Figures = field(default_factory=lambda: _Figures())
    self_reported: _Figures = field(default_factory=lambda: _Figures())
    #: Trials with figures, by source.
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, o: TrialOutcome) -> None:
        self.trials += 1
        if o.status == PASSED:
            self.passed += 1
        elif o.status == FAILED:
            self.failed += 1
        elif o.status == TIMEOUT:
            self.timeout += 1
        else:
            # ERROR, and anything unknown: never judged.
            self.errors += 1
            kind = o.error_kind or "unknown"
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if o.resumed:
            self.resumed += 1
        if o.attempt > 1:
            self.retried += 1
            self.rerun_judged += int(o.rerun_judged)
        if o.agent_duration is not None and math.isfinite(o.agent_duration):
            self.agent_durations.append(float(o.agent_duration))
        m = o.metrics
        source = metrics_source(m.source) or "self_reported"  # figures of no known source
        figures = self.self_reported if source == "self_reported" else self.measured
        if figures.add(m):
            self.sources[source] = self.sources.get(source, 0) + 1

    @property
    def judged(self) -> int:
        return self.passed + self.failed + self.timeout

    def common(self) -> GroupFigures:
        n = self.judged
        figures: GroupFigures = {
            "trials": self.trials,
            "n": n,
            "passed": self.passed,
            "failed": self.failed,
            "timeout": self.timeout,
            "errors": self.errors,
            "error_kinds": dict(sorted(self.error_kinds.items())),
            "resumed": self.resumed,
            "pass_rate": (self.passed / n) if n else None,
            "wilson": list(wilson_interval(self.passed, n)) if n else None,
            "mean_agent_duration": (
                math.fsum(self.agent_durations) / len(self.agent_durations)
                if self.agent_durations
                else None
            ),
            **self.figures(),
        }
        return figures

    def figures(self) -> GroupFigures:
        """``tokens`` and ``cost_usd`` with ``metrics_source``, where they came from: the
        measured figures (``gateway``, ``cli``, or both joined by ``+``) when any trial has
        them, else the self-reported ones (``self_reported``); self-reported figures beside
        measured ones are under ``self_reported``, apart, never in the same totals."""
        main = self.measured if self.measured.with_metrics else self.self_reported
        measured = main is self.measured
        names = sorted(s for s in self.sources if (s != "self_reported") == measured)
        apart = self.self_reported if measured and self.self_reported.with_metrics else None
        self_reported: SelfReported | None = None
        if apart is not None:
            self_reported = {
                "tokens": apart.tokens(), "cost_usd": apart.cost(),
                "trials_with_metrics": apart.with_metrics}
        return {
            "tokens": main.tokens(),
            "cost_usd": main.cost(),
            "trials_with_metrics": main.with_metrics,
            "metrics_source": "+".join(names) or None,
            "self_reported": self_reported,
        }


def _ordered(given: Sequence[str], seen: Iterable[str]) -> list[str]:
    """``given`` in its order (deduplicated), then names only in ``seen``, sorted."""
    out: list[str] = []
    have: set[str] = set()
    for name in given:
        if name not in have:
            out.append(name)
            have.add(name)
    out.extend(sorted(set(seen) - have))
    return out


def _threshold(
    meta: ExperimentMeta, task: str, cli_min_pass_rate: float | None
) -> tuple[float | None, str | None]:
    """The gate of one cell and where it came from ("task", "experiment", "cli")."""
    file_value = meta.task_min_pass_rate.get(task)
    source: str | None = "task"
    if file_value is None:
        file_value = meta.min_pass_rate
        source = "experiment"
    if file_value is None:
        source = None
    if cli_min_pass_rate is not None and (file_value is None or cli_min_pass_rate > file_value):
        return cli_min_pass_rate, "cli"
    return file_value, source


def _pass_at_k_ks(meta: ExperimentMeta, tasks: Sequence[str], judged_max: int) -> list[int]:
    """k values reported: 1, and the experiment's smallest trials-per-task when above 1."""
    counts = [meta.trials_per_task[t] for t in tasks if meta.trials_per_task.get(t)]
    trials = min(counts) if counts else judged_max
    return [1, trials] if trials > 1 else [1]


def _validate_rate(value: float | None, what: str) -> None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be between 0 and 1, got {value!r}")


def _build_experiment(
    name: str,
    meta: ExperimentMeta,
    outcomes: Sequence[TrialOutcome],
    cli_min_pass_rate: float | None,
    baseline: str | None,
    not_run: int,
    errors: str = ERRORS_COUNT,
    alpha: float = 0.05,
) -> ExperimentSummary:
    variants = _ordered(meta.variants, (o.variant for o in outcomes))
    tasks = _ordered(meta.tasks, (o.task for o in outcomes))
    cell_acc: dict[tuple[str, str], _Acc] = {(v, t): _Acc() for v in variants for t in tasks}
    variant_acc: dict[str, _Acc] = {v: _Acc() for v in variants}
    total = _Acc()
    for o in outcomes:
        cell_acc[(o.variant, o.task)].add(o)
        variant_acc[o.variant].add(o)
        total.add(o)
    judged_max = max((a.judged for a in cell_acc.values()), default=0)
    ks = _pass_at_k_ks(meta, tasks, judged_max)
    thresholds = {t: _threshold(meta, t, cli_min_pass_rate) for t in tasks}
    task_rows: list[TaskSummary] = [
        {
            "name": t,
            "trials": meta.trials_per_task.get(t),
            "min_pass_rate": thresholds[t][0],
            "gate_source": thresholds[t][1],
        }
        for t in tasks
    ]

    cells: dict[tuple[str, str], CellSummary] = {}
    gated_cells = sum(1 for t in tasks if thresholds[t][0] is not None) * len(variants)
    failures: list[GateFailure] = []
    for v in variants:
        for t in tasks:
            cell = _cell(
                v, t, cell_acc[(v, t)], ks, thresholds[t], errors, alpha / max(1, gated_cells)
            )
            cells[(v, t)] = cell
            if cell["gate"]["met"] is False:
                failures.append(_gate_failure(name, cell))
    variant_rows = [
        _variant_row(v, variant_acc[v], [cells[(v, t)] for t in tasks], ks, failures)
        for v in variants
    ]
    base, notes = _baseline(variants, baseline)
    if total.rerun_judged:
        notes = [
            *notes,
            f"{total.rerun_judged} judged trial(s) were run again (--eval-retry) and count with "
            "their last attempt: retrying failures biases pass rates upward",
        ]
    comparisons = [
        _comparison(base, v, tasks, cells, errors)
        for v in variants
        if base is not None and v != base
    ]
    gated = gated_cells > 0
    if errors == ERRORS_EXCLUDE:
        notes = [
            *notes,
            "errors excluded (--eval-errors exclude): error trials leave the gates as they leave "
            "the pass rates",
        ]
    unjudged = [r["name"] for r in variant_rows if not r["n"]]
    blind = _blind_gates(cells.values(), alpha / max(1, gated_cells), gated_cells)
    if blind:
        notes = [*notes, blind]
    return {
        "name": name,
        "run_id": meta.run_id,
        "results_dir": meta.results_dir,
        "jobs_dir": meta.jobs_dir,
        "min_pass_rate": meta.min_pass_rate,
        "variants": variant_rows,
        "tasks": task_rows,
        "pass_at_k_ks": ks,
        "cells": list(cells.values()),
        "baseline": base,
        "comparisons": comparisons,
        "flaky": [
            {"variant": c["variant"], "task": c["task"], "passed": c["passed"], "n": c["n"]}
            for c in cells.values()
            if c["flaky"]
        ],
        "totals": _totals(total, not_run),
        "errors_policy": errors,
        "gate_rule": {
            "rule": GATE_RULE,
            "alpha": alpha,
            "level": 1.0 - alpha / max(1, gated_cells),
            "cells": gated_cells,
            "errors": errors,
        },
        "verdict": {
            "gated": gated,
            "passed": (not failures and not unjudged) if gated else None,
            "gated_cells": gated_cells,
            "failures": failures,
            "unjudged_variants": unjudged,
        },
        "notes": notes,
    }


def _cell(
    variant: str,
    task: str,
    acc: _Acc,
    ks: Sequence[int],
    gate: tuple[float | None, str | None],
    errors: str = ERRORS_COUNT,
    cell_alpha: float = 0.05,
) -> CellSummary:
    """One variant x task: counts and rates, pass@k, flakiness and its gate (judged at the
    per-cell level ``cell_alpha``, see the module docstring)."""
    n = acc.judged
    threshold, source = gate
    met: bool | None = None
    passes, trials = gate_counts(TaskCounts(acc.passed, n, acc.errors), errors)
    upper: float | None = None
    p_value: float | None = None
    if threshold is not None:
        if n:
            # the exact one-sided test of "rate >= threshold"; a threshold a hair above a
            # rate (floating point) is the rate
            p_value = binom_cdf(passes, trials, max(0.0, threshold - _GATE_TOLERANCE))
            upper = binom_upper_bound(passes, trials, cell_alpha)
            met = not p_value < cell_alpha
        else:
            met = False
    gate_record: CellGate = {
        "threshold": threshold,
        "source": source,
        "met": met,
        "rate": (passes / trials) if trials else None,
        "passed": passes,
        "trials": trials,
        "upper": upper,
        "level": 1.0 - cell_alpha,
        "p_value": p_value,
    }
    return {
        "variant": variant,
        "task": task,
        **acc.common(),
        "pass_at_k": {str(k): (pass_at_k(n, acc.passed, k) if n >= k else None) for k in ks},
        "flaky": 0 < acc.passed < n,
        "gate": gate_record,
    }


def _blind_gates(cells: Iterable[CellSummary], cell_alpha: float, m: int) -> str | None:
    """A note when some gated cells cannot fail on their trials: even none passed would be
    consistent with their minimum at the family's level (too few trials for the gate)."""
    blind = []
    for c in cells:
        gate = c["gate"]
        threshold, trials = gate["threshold"], gate["trials"]
        if (
            threshold is None
            or not c["n"]
            or threshold <= _GATE_TOLERANCE  # a gate of 0 fails only a cell with no judged trial
            or threshold >= 1.0 - _GATE_TOLERANCE  # a gate of 1 fails on any trial not passed
        ):
            continue
        if binom_cdf(0, trials, max(0.0, threshold - _GATE_TOLERANCE)) >= cell_alpha:
            need = math.floor(math.log(cell_alpha) / math.log1p(-threshold)) + 1
            blind.append((need, threshold))
    if not blind:
        return None
    need, threshold = max(blind)
    return (
        f"{len(blind)} gated variant x task pair(s) cannot fail their minimum on their trials: "
        f"with 95% confidence for the {m} gated pairs together, even 0 passed is consistent "
        f"with it; a minimum of {threshold:g} needs at least {need} trials per pair to catch "
        "a pair that never passes (docs/reports.md, Gates)"
    )


def _gate_failure(experiment: str, cell: CellSummary) -> GateFailure:
    return {
        "experiment": experiment,
        "variant": cell["variant"],
        "task": cell["task"],
        "pass_rate": cell["pass_rate"],
        "n": cell["n"],
        "errors": cell["errors"],
        "threshold": cell["gate"]["threshold"],
        "source": cell["gate"]["source"],
        "gate_rate": cell["gate"]["rate"],
        "gate_passed": cell["gate"]["passed"],
        "gate_trials": cell["gate"]["trials"],
        "upper": cell["gate"]["upper"],
        "level": cell["gate"]["level"],
    }


def _variant_row(
    variant: str,
    acc: _Acc,
    cells: Sequence[CellSummary],
    ks: Sequence[int],
    failures: Sequence[GateFailure],
) -> VariantSummary:
    """One variant over all its trials, with its two intervals; its pass@k is the mean over the
    same tasks for every k (those with at least max(k) judged trials; with none, pass@1 over
    every judged task and the larger k unknown), so pass@k is never below pass@1."""
    common = acc.common()
    clustered = clustered_interval([(c["passed"], c["n"]) for c in cells], CONFIDENCE)
    pak: dict[str, float | None] = {}
    pak_tasks: dict[str, int] = {}
    k_max = max(ks)
    same = [c for c in cells if c["n"] >= k_max]
    for k in ks:
        group = same if same else [c for c in cells if c["n"] >= k and k == 1]
        # every cell of the group has at least k judged trials: a pass@k
        values = [p for c in group if (p := c["pass_at_k"][str(k)]) is not None]
        pak[str(k)] = math.fsum(values) / len(values) if values else None
        pak_tasks[str(k)] = len(values)
    return {
        "name": variant,
        **common,
        # Renamed for the variant level: k of n passed.
        "k": common["passed"],
        "ci_level": CONFIDENCE,
        "ci_these_tasks": common["wilson"],
        "ci_tasks_like_these": list(clustered[1]) if clustered else None,
        "tasks_judged": sum(1 for c in cells if c["n"]),
        "pass_at_k": pak,
        "pass_at_k_tasks": pak_tasks,
        "flaky_tasks": [c["task"] for c in cells if c["flaky"]],
        "gate_failures": sum(1 for f in failures if f["variant"] == variant),
    }


def _baseline(variants: Sequence[str], baseline: str | None) -> tuple[str | None, list[str]]:
    """The variant compared against (None with fewer than 2 variants), and a note when the
    requested one is not a variant of this experiment."""
    if len(variants) < 2:
        return None, []
    if baseline is not None and baseline in variants:
        return baseline, []
    base = variants[0]
    if baseline is None:
        return base, []
    return base, [
        f"baseline {baseline!r} is not a variant of this experiment; "
        f"comparing against the first variant {base!r}"
    ]


def _comparison(
    base: str,
    variant: str,
    tasks: Sequence[str],
    cells: Mapping[tuple[str, str], CellSummary],
    errors: str = ERRORS_COUNT,
) -> Comparison:
    """``variant`` against ``base``, paired over the tasks with a trial in both (a judged one,
    or under ``count`` an error, which counts as a trial that did not pass): the regression
    gate's estimand and test (:func:`.regression.compare_variant`), two-sided."""
    excluded: list[str] = []
    b_counts: dict[str, tuple[int, int]] = {}
    c_counts: dict[str, tuple[int, int]] = {}
    for t in tasks:
        cb, cc = cells[(base, t)], cells[(variant, t)]
        b = gate_counts(TaskCounts(cb["passed"], cb["n"], cb["errors"]), errors)
        c = gate_counts(TaskCounts(cc["passed"], cc["n"], cc["errors"]), errors)
        if not b[1] or not c[1]:
            excluded.append(t)
            continue
        b_counts[t], c_counts[t] = b, c
    res = compare_variant(b_counts, c_counts)
    diffs = [c_counts[t][0] / c_counts[t][1] - b_counts[t][0] / b_counts[t][1] for t in b_counts]
    wins = sum(1 for d in diffs if d > 1e-12)
    losses = sum(1 for d in diffs if d < -1e-12)
    return {
        "baseline": base,
        "variant": variant,
        "tasks_paired": res.n_tasks,
        "tasks_excluded": excluded,
        "baseline_pass_rate": res.base_rate,
        "variant_pass_rate": res.cand_rate,
        "diff": res.diff,
        "ci": [res.ci_low, res.ci_high] if res.ci_low is not None else None,
        "confidence": CONFIDENCE,
        "p_value": res.p_two_sided,
        "p_worse": res.p_value,
        "sided": "two-sided",
        "wins": wins,
        "losses": losses,
        "ties": len(diffs) - wins - losses,
        "method": res.method.replace("(one-sided)", "(two-sided)"),
        "question": QUESTION_THESE_TASKS,
        "errors": errors,
        "weighting": "per-task rates weighted by trials (n_a n_b / (n_a + n_b))",
    }


_TOTAL_KEYS = (
    "trials",
    "judged",
    "passed",
    "failed",
    "timeout",
    "errors",
    "resumed",
    "retried",
    "rerun_judged",
    "not_run",
)


def _totals(acc: _Acc, not_run: int) -> Totals:
    return {
        "trials": acc.trials,
        "judged": acc.judged,
        "passed": acc.passed,
        "failed": acc.failed,
        "timeout": acc.timeout,
        "errors": acc.errors,
        "resumed": acc.resumed,
        "retried": acc.retried,
        "rerun_judged": acc.rerun_judged,
        "not_run": not_run,
    }


def build_summary(
    outcomes: Iterable[TrialOutcome],
    *,
    experiments_meta: Mapping[str, ExperimentMeta],
    cli_min_pass_rate: float | None,
    baseline: str | None,
    not_run: Mapping[str, int] | None = None,
    errors: str = ERRORS_COUNT,
    alpha: float = 0.05,
) -> Summary:
    """Summarise a run: the content of summary.json (see the module docstring for the rules).

    ``errors``: the error policy (``--eval-errors``: ``count`` or ``exclude``). ``alpha``: the
    family-wise level at which the experiment's cell gates are judged together
    (``--eval-alpha``).

    ``experiments_meta`` maps experiment name -> :class:`ExperimentMeta`, in display order.
    ``not_run`` maps experiment name -> number of trials that were selected but did not run
    (e.g. the session was interrupted); it is reported, not gated on (the cells concerned
    have fewer judged trials, and an empty cell fails its gate anyway).
    """
    _validate_rate(cli_min_pass_rate, "--eval-min-pass-rate")
    if errors not in ERROR_POLICIES:
        raise ValueError(f"errors must be one of {', '.join(ERROR_POLICIES)}, got {errors!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    for meta in experiments_meta.values():
        _validate_rate(meta.min_pass_rate, f"min_pass_rate of {meta.name!r}")
        for task, value in meta.task_min_pass_rate.items():
            _validate_rate(value, f"min_pass_rate of task {task!r} in {meta.name!r}")
    latest: dict[tuple[str, str, str, int], TrialOutcome] = {}
    for o in outcomes:
        latest.pop(o.key, None)  # keep arrival order of the last occurrence
        latest[o.key] = o
    by_experiment: dict[str, list[TrialOutcome]] = {}
    for o in latest.values():
        by_experiment.setdefault(o.experiment, []).append(o)
    not_run = not_run or {}
    names = _ordered(list(experiments_meta), [*by_experiment, *not_run])

    experiments: list[ExperimentSummary] = []
    for name in names:
        meta = experiments_meta.get(name) or ExperimentMeta(name=name)
        experiments.append(
            _build_experiment(
                name,
                meta,
                by_experiment.get(name, []),
                cli_min_pass_rate,
                baseline,
                int(not_run.get(name, 0)),
                errors,
                alpha,
            )
        )

    return _session(experiments, cli_min_pass_rate, baseline)


def combine_summaries(
    summaries: Sequence[Summary],
    *,
    cli_min_pass_rate: float | None,
    baseline: str | None,
) -> Summary:
    """One summary of all the experiments of ``summaries``, in their order.

    Each summary is what :func:`build_summary` returned for some experiments (typically one
    each, built with the same ``cli_min_pass_rate`` and ``baseline``). Nothing is recomputed:
    the experiments are taken as they are, the totals are their sums and the verdict is
    theirs together (gated when any is, passed when every gated one passed, failures in
    experiment order). The result equals :func:`build_summary` over all their outcomes when
    no experiment appears in two of them.
    """
    for part in summaries:
        if part["cli_min_pass_rate"] != cli_min_pass_rate or part["baseline"] != baseline:
            raise ValueError(
                "combine_summaries needs summaries built with the same gate and baseline"
            )
    experiments = [exp for part in summaries for exp in part["experiments"]]
    return _session(experiments, cli_min_pass_rate, baseline)


def _session(
    experiments: list[ExperimentSummary], cli_min_pass_rate: float | None, baseline: str | None
) -> Summary:
    """The session-level summary around per-experiment summaries: totals and verdict."""
    counts = {key: 0 for key in _TOTAL_KEYS}
    for exp in experiments:
        theirs: Mapping[str, int] = cast("Mapping[str, int]", exp["totals"])
        for key in _TOTAL_KEYS:
            counts[key] += theirs[key]
    totals = cast(Totals, counts)  # the keys of _TOTAL_KEYS, in its order
    failures = [f for e in experiments for f in e["verdict"]["failures"]]
    regressions = [
        f"{e['name']} / {v}" for e in experiments for v in e["verdict"].get("regressions", [])
    ]
    unjudged = [
        f"{e['name']} / {v}"
        for e in experiments
        if e["verdict"]["gated"]
        for v in e["verdict"].get("unjudged_variants", [])
    ]
    gated = any(e["verdict"]["gated"] for e in experiments)
    verdict: Verdict = {
        "gated": gated,
        "passed": (not failures and not regressions and not unjudged) if gated else None,
        "gated_cells": sum(e["verdict"]["gated_cells"] for e in experiments),
        "failures": failures,
        "unjudged_variants": unjudged,
    }
    if any("regression" in e for e in experiments):
        verdict["regressions"] = regressions
    return {
        "schema_version": SCHEMA_VERSION,
        "cli_min_pass_rate": cli_min_pass_rate,
        "baseline": baseline,
        "totals": totals,
        "verdict": verdict,
        "experiments": experiments,
    }


def apply_regression(summary: Summary, regression: RegressionSection) -> Summary:
    """``summary`` (of one experiment) with the regression gate's result (``--eval-baseline-run``,
    see :mod:`.regression`): the experiment gains a ``regression`` section and its verdict is
    gated; it fails when a variant regressed, whatever the min-pass-rate gates say."""
    (exp,) = summary["experiments"]
    exp = exp.copy()
    exp["regression"] = regression.copy()
    verdict = exp["verdict"].copy()
    verdict["gated"] = True
    verdict["regressions"] = list(regression["regressed"])
    verdict["passed"] = (
        not verdict["failures"]
        and not verdict["regressions"]
        and not verdict.get("unjudged_variants")
    )
    exp["verdict"] = verdict
    return _session([exp], summary["cli_min_pass_rate"], summary["baseline"])
