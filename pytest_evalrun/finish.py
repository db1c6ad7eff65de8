"""One way to finish a run: its outcomes, its plan and its gates' inputs -> the finished run.

The pytest session (``controller.py``) and ``evalrun merge`` (``store/merge.py``) both finish a
run with :func:`finish_run`, from the same inputs:

- the run's trial outcomes (the last attempt of each trial);
- its :class:`Plan` (run.json's ``plan``: variants and tasks in file order, the file's gates);
- its :class:`Gates`: every gate's inputs, recorded in run.json's ``gates`` when a session
  finishes (``--eval-min-pass-rate``, ``--eval-baseline``, ``--eval-alpha``, the error policy,
  the retry policy, and for ``--eval-baseline-run`` the reference, the resolved baseline run
  and that run's counts per variant and task, so a merge recomputes the regression gate
  without the baseline run at hand).

So a run done on one machine and the same run done as shards and merged reach the same
verdict, summaries and exit status. Pure: no I/O, no pytest.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .layoutjson import BaselineRunGate, RunGates, Summary, Verdict
from .outcome import ERROR, JUDGED, TrialOutcome
from .report.policy import ERROR_POLICIES, ERRORS_COUNT
from .report.regression import (
    TaskCounts,
    counts_from_outcomes,
    coverage_notes,
    regression_section,
)
from .report.summary import ExperimentMeta, apply_regression, build_summary

__all__ = [
    "COUNT_KEYS",
    "Finished",
    "Gates",
    "GatesError",
    "Plan",
    "RegressionGate",
    "finish_run",
    "gate_exit",
    "gates_differences",
    "run_counts",
]

#: run.json's ``counts``, in this order.
COUNT_KEYS = ("total", "passed", "failed", "timeout", "error", "resumed", "crashed", "not_run")


class GatesError(ValueError):
    """run.json's ``gates`` or ``plan`` cannot be read (one line saying which field)."""


def _rate(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GatesError(f"{what} must be a number, not {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise GatesError(f"{what} must be between 0 and 1, not {value!r}")
    return float(value)


def _str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise GatesError(f"{what} must be a string, not {value!r}")
    return value


@dataclass(frozen=True)
class RegressionGate:
    """``--eval-baseline-run``: the regression gate's inputs."""

    #: The reference as given (``latest``, ``baseline``, an id or prefix, ...).
    ref: str
    #: The baseline run it resolved to; None when there was none to compare with (``note``).
    run_id: str | None = None
    #: The baseline run's counts: variant slug -> task slug -> counts.
    counts: Mapping[str, Mapping[str, TaskCounts]] = field(default_factory=dict)
    #: Why there is no baseline run (e.g. a new experiment), else None.
    note: str | None = None
    #: What the reports say about the baseline run (e.g. found partial), the same for every
    #: shard of the run: added to the summary's notes.
    notes: tuple[str, ...] = ()
    #: Judged trials the baseline run ran again (``--eval-retry``); None when unknown.
    rerun_judged: int | None = None

    def to_json(self) -> BaselineRunGate:
        return {
            "ref": self.ref,
            "run_id": self.run_id,
            "note": self.note,
            "notes": list(self.notes),
            "rerun_judged": self.rerun_judged,
            "counts": {
                v: {t: [c.passed, c.judged, c.errors] for t, c in sorted(tasks.items())}
                for v, tasks in sorted(self.counts.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> RegressionGate:
        if not isinstance(data, dict):
            raise GatesError(f"gates.baseline_run must be an object, not {data!r}")
        ref = _str(data.get("ref"), "gates.baseline_run.ref")
        if not ref:
            raise GatesError("gates.baseline_run.ref is missing")
        raw = data.get("counts")
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise GatesError("gates.baseline_run.counts must be an object")
        counts: dict[str, dict[str, TaskCounts]] = {}
        for v, tasks in raw.items():
            if not isinstance(tasks, dict):
                raise GatesError(f"gates.baseline_run.counts[{v!r}] must be an object")
            for t, c in tasks.items():
                ok = (
                    isinstance(c, list)
                    and len(c) == 3
                    and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in c)
                    and c[0] <= c[1]
                )
                if not ok:
                    raise GatesError(
                        f"gates.baseline_run.counts[{v!r}][{t!r}] must be "
                        f"[passed, judged, errors], not {c!r}"
                    )
                counts.setdefault(str(v), {})[str(t)] = TaskCounts(*c)
        notes = data.get("notes")
        notes = [] if notes is None else notes
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise GatesError(f"gates.baseline_run.notes must be a list of strings, not {notes!r}")
        rerun = data.get("rerun_judged")
        if rerun is not None and (isinstance(rerun, bool) or not isinstance(rerun, int)):
            raise GatesError(f"gates.baseline_run.rerun_judged must be a count, not {rerun!r}")
        return cls(
            ref=ref,
            run_id=_str(data.get("run_id"), "gates.baseline_run.run_id"),
            counts=counts,
            note=_str(data.get("note"), "gates.baseline_run.note"),
            notes=tuple(notes),
            rerun_judged=rerun,
        )


@dataclass(frozen=True)
class Gates:
    """Every gate's inputs of one run (run.json's ``gates``)."""

    #: ``--eval-min-pass-rate``.
    min_pass_rate: float | None = None
    #: ``--eval-baseline``: the variant the others are compared with inside the run.
    baseline_variant: str | None = None
    #: ``--eval-alpha``.
    alpha: float = 0.05
    #: ``--eval-errors`` / ini ``evalrun_errors``: how gates treat error trials.
    errors: str = ERRORS_COUNT
    #: ``--eval-retry``: the statuses run again, over every session of the run.
    retry: tuple[str, ...] = ()
    #: ``--eval-baseline-run``, or None.
    regression: RegressionGate | None = None

    def to_json(self) -> RunGates:
        return {
            "min_pass_rate": self.min_pass_rate,
            "baseline_variant": self.baseline_variant,
            "alpha": self.alpha,
            "errors": self.errors,
            "retry": sorted(self.retry),
            "baseline_run": self.regression.to_json() if self.regression else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> Gates:
        if not isinstance(data, dict):
            raise GatesError(f"gates must be an object, not {data!r}")
        alpha = data.get("alpha", 0.05)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0.0 < alpha < 1.0
        ):
            raise GatesError(f"gates.alpha must be a number between 0 and 1, not {alpha!r}")
        errors = data.get("errors", ERRORS_COUNT)
        if errors not in ERROR_POLICIES:
            raise GatesError(f"gates.errors must be one of {', '.join(ERROR_POLICIES)}")
        retry = data.get("retry")
        retry = [] if retry is None else retry
        if not isinstance(retry, list) or not all(isinstance(r, str) for r in retry):
            raise GatesError(f"gates.retry must be a list of statuses, not {retry!r}")
        base = data.get("baseline_run")
        return cls(
            min_pass_rate=_rate(data.get("min_pass_rate"), "gates.min_pass_rate"),
            baseline_variant=_str(data.get("baseline_variant"), "gates.baseline_variant"),
            alpha=float(alpha),
            errors=str(errors),
            retry=tuple(sorted(set(retry))),
            regression=RegressionGate.from_json(base) if base is not None else None,
        )


#: A field of :meth:`Gates.to_json` and the option that sets it (for conflict messages).
GATE_OPTIONS = {
    "min_pass_rate": "--eval-min-pass-rate",
    "baseline_variant": "--eval-baseline",
    "alpha": "--eval-alpha",
    "errors": "--eval-errors",
    "retry": "--eval-retry",
    "baseline_run": "--eval-baseline-run",
}


def gates_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The options whose recorded inputs differ between two runs' ``gates`` (as recorded:
    for the baseline run, its reference, the run it resolved to and that run's counts)."""
    return [
        flag
        for key, flag in GATE_OPTIONS.items()
        if _compared(key, a.get(key)) != _compared(key, b.get(key))
    ]


def _compared(key: str, value: Any) -> Any:
    """A recorded input as compared between shards: the baseline run's notes say where each
    machine looked (its own paths), so they are left out."""
    if key == "baseline_run" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("note", "notes")}
    return value


@dataclass(frozen=True)
class Plan:
    """run.json's ``plan``: what a summary needs besides the trials."""

    #: Variant and task names in file order.
    variants: Sequence[str] = ()
    tasks: Sequence[str] = ()
    #: The file's gates: experiment-level and per task.
    min_pass_rate: float | None = None
    task_min_pass_rate: Mapping[str, float | None] = field(default_factory=dict)
    trials_per_task: Mapping[str, int] = field(default_factory=dict)
    #: Variant name -> slug (runs recorded before 0.3 have none: outcomes tell).
    variant_slugs: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise GatesError(f"plan must be an object, not {data!r}")

        def names(key: str) -> list[str]:
            value = data.get(key) or []
            if not isinstance(value, list):
                raise GatesError(f"plan.{key} must be a list")
            return [str(v) for v in value]

        def mapping(key: str) -> dict[str, Any]:
            value = data.get(key) or {}
            if not isinstance(value, dict):
                raise GatesError(f"plan.{key} must be an object")
            return {str(k): v for k, v in value.items()}

        return cls(
            variants=names("variants"),
            tasks=names("tasks"),
            min_pass_rate=data.get("min_pass_rate"),
            task_min_pass_rate=mapping("task_min_pass_rate"),
            trials_per_task=mapping("trials_per_task"),
            variant_slugs={k: str(v) for k, v in mapping("variant_slugs").items()},
        )


@dataclass
class Finished:
    """A finished run: its summary (summary.json's content) and run.json's counts."""

    summary: Summary
    counts: dict[str, int]

    @property
    def verdict(self) -> Verdict:
        return self.summary["verdict"]

    @property
    def exit(self) -> int | None:
        """:func:`gate_exit` of the verdict."""
        return gate_exit(self.verdict)


def gate_exit(verdict: Mapping[str, Any]) -> int | None:
    """The exit status a verdict asks for: 0 when every gate passed, 1 when one failed, None
    when no gate is set (the exit status is then pytest's usual)."""
    if not verdict.get("gated"):
        return None
    return 0 if verdict.get("passed") else 1


def run_counts(outcomes: Iterable[TrialOutcome], total: int) -> dict[str, int]:
    """run.json's ``counts``: trials by status, resumed and crashed ones, and the selected
    trials that did not run (``total``: the trials selected, at least the outcomes)."""
    counts = {k: 0 for k in COUNT_KEYS}
    n = 0
    for o in outcomes:
        n += 1
        counts[o.status if o.status in JUDGED else ERROR] += 1
        counts["resumed"] += int(o.resumed)
        counts["crashed"] += int(o.crashed)
    counts["total"] = max(total, n)
    counts["not_run"] = counts["total"] - n
    return counts


def _ordered(plan: Sequence[str], selected: Iterable[str]) -> list[str]:
    chosen = set(selected)
    ordered = [n for n in dict.fromkeys(plan) if n in chosen]
    return ordered + sorted(chosen - set(ordered))


def _selected(outcomes: Iterable[TrialOutcome], task_slugs: Collection[str] | None) -> set[str]:
    selected = {o.task_slug or o.task for o in outcomes}
    if task_slugs is not None:
        selected.update(task_slugs)
    return selected


def finish_run(
    outcomes: Sequence[TrialOutcome],
    plan: Plan,
    gates: Gates,
    *,
    experiment: str,
    variants: Collection[str] = (),
    tasks: Collection[str] = (),
    task_slugs: Collection[str] | None = None,
    total: int = 0,
    run_id: str = "",
    results_dir: str = "",
    jobs_dir: str | None = None,
) -> Finished:
    """The finished run of one experiment.

    ``variants`` and ``tasks``: the names the run selected (besides those of the outcomes;
    a selected variant or task with no outcome yet still shows, e.g. in an interrupted run).
    ``task_slugs``: the slugs of the tasks the run selected (-k, -m); None: the tasks of the
    outcomes. A baseline task outside them is not selected, never dropped.
    ``total``: how many trials were selected. ``run_id``, ``results_dir``, ``jobs_dir``: where
    the run is, for the summary."""
    variant_names = _ordered(plan.variants, [*variants, *(o.variant for o in outcomes)])
    meta = ExperimentMeta(
        name=experiment,
        variants=variant_names,
        tasks=_ordered(plan.tasks, [*tasks, *(o.task for o in outcomes)]),
        min_pass_rate=plan.min_pass_rate,
        task_min_pass_rate=dict(plan.task_min_pass_rate),
        trials_per_task=dict(plan.trials_per_task),
        run_id=run_id,
        results_dir=results_dir,
        jobs_dir=jobs_dir,
    )
    counts = run_counts(outcomes, total)
    summary = build_summary(
        outcomes,
        experiments_meta={experiment: meta},
        cli_min_pass_rate=gates.min_pass_rate,
        baseline=gates.baseline_variant,
        not_run={experiment: counts["not_run"]},
        errors=gates.errors,
        alpha=gates.alpha,
    )
    regression = gates.regression
    if regression is not None and regression.run_id is not None:
        slugs = {o.variant: o.variant_slug for o in outcomes if o.variant_slug}
        slugs.update(plan.variant_slugs)
        names = {slugs.get(name, name): name for name in variant_names}
        section = regression_section(
            regression.counts,
            counts_from_outcomes(outcomes),
            baseline_run=regression.run_id,
            alpha=gates.alpha,
            variant_names=names,
            errors=gates.errors,
            selected_tasks=_selected(outcomes, task_slugs),
            base_rerun_judged=regression.rerun_judged,
            cand_rerun_judged=summary["experiments"][0]["totals"]["rerun_judged"],
        )
        summary = apply_regression(summary, section)
        notes = summary["experiments"][0]["notes"]
        notes.extend(regression.notes)
        notes.extend(coverage_notes(regression.run_id, regression.counts, outcomes, names))
    elif regression is not None and regression.note:
        summary["experiments"][0]["notes"].append(
            f"regression gate: {regression.note}; nothing to compare with"
        )
    return Finished(summary=summary, counts=counts)
