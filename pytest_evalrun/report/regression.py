"""The regression gate's statistics: is a candidate run worse than a baseline run?

Pure functions, no I/O, no pytest, no randomness. :func:`compare_variant` compares one
variant's per-task pass counts in two runs of the same experiment; :func:`compare_runs` groups
trial rows by variant and calls it for each. ``--eval-baseline-run`` and ``evalrun compare``
both use this module. docs/regression.md explains the choices and gives the simulation figures
(``bench/sim_regression.py`` reproduces them).

The test
--------
The null hypothesis is *no real change*: on every task, a trial passes with the same
probability ``p_i`` in both runs (``p_i`` may differ from task to task, and trials are
independent given the task). Under it, conditional on the number of passes ``s_i`` of task
``i`` over both runs, which of the task's ``N_i = n_b + n_c`` trials passed is a uniformly
random choice: the candidate's passes ``x_c`` follow the hypergeometric distribution
``C(n_c, k) C(n_b, s_i - k) / C(N_i, s_i)``, whatever ``p_i``. The statistic is the total of the
candidate's passes ``T = sum_i x_c,i``; its exact null distribution is the convolution of the
per-task hypergeometrics, and the one-sided p-value is ``P(T <= T_observed)``. This is the
exact stratified permutation test (trials shuffled between the runs inside each task; the exact
form of the Cochran-Mantel-Haenszel test). Because it conditions on every ``s_i``, its false
alarm rate is at most ``alpha`` for *every* set of task rates and trial counts: few tasks, one
trial, rates at 0 or 1, unequal counts. Discreteness makes it conservative (below ``alpha``),
never above.

``T`` minus its null mean equals ``sum_i w_i d_i`` with ``w_i = n_b n_c / N_i`` and
``d_i = x_c/n_c - x_b/n_b``, so the test weighs each task's rate difference by ``w_i``. The
reported rates and difference use the same weights, so ``diff == cand_rate - base_rate`` and the
test and the estimate agree; when every task has the same trial counts in each run, the rates
are the plain pass rates over the paired tasks.

For a very large comparison (the convolution's work above :data:`EXACT_WORK_LIMIT`, e.g. 100
tasks x 20 trials) the p-value is the normal approximation of the same conditional
distribution with a continuity correction, and ``method`` says so.

The interval and the minimum detectable drop
--------------------------------------------
``ci_low``/``ci_high``: ``diff +/- (z_0.975 * sqrt(V) + 0.5) / W`` with ``W = sum_i w_i`` and
``V = sum_i w_i^2 (v(x_b, n_b) + v(x_c, n_c))``, each binomial variance ``v(x, n)`` taken at
the Agresti-Caffo adjusted rate ``pa = (x + 1) / (n + 2)`` as ``pa (1 - pa) / n``, so a task at
0/n or n/n still has some uncertainty; ``0.5 / W`` is the continuity correction (``W * diff``
moves in steps of 1 given the tasks' totals). Clipped to [-1, 1]. In the simulations it held
the true difference in 95-100% of runs.

``min_detectable_drop``: the smallest expected drop of the (weighted) pass rate that the test
detects with probability 0.8 at ``alpha``, when every task's rate falls by the same amount
``delta`` (clipped at 0) from this comparison's pooled per-task rate ``p_i = s_i / N_i``, with
this comparison's trial counts. Power is the normal approximation of the test: it rejects when
``W * drop - z_alpha * sigma0 - 0.5 > 0`` on the scale of ``sigma1``, with null variance
``sigma0^2 = sum_i w_i (pbar_i (1 - pbar_i) + b_i)`` and alternative variance
``sigma1^2 = sum_i w_i^2 ((p_i (1 - p_i) + b_i) / n_b + (q_i (1 - q_i) + b_i) / n_c)``, where
``q_i = max(0, p_i - delta)``, ``pbar_i`` is the pooled rate under the drop, ``0.5`` a
continuity correction for the test's discreteness, and ``b_i = p_i (1 - p_i) / (N_i - 1)``
undoes the downward bias of a plug-in binomial variance. ``delta`` is found by bisection; the
result is ``sum_i w_i (p_i - q_i) / W`` at that ``delta``. ``None`` when even a drop to 0 on
every task would not be detected with 80% power. In the simulations, the power at the reported
drop was 0.80-0.82.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from itertools import repeat
from operator import add, mul
from statistics import NormalDist
from typing import Any, NamedTuple, Protocol, cast

from ..layoutjson import RegressionResultRecord, RegressionSection, RegressionVariant
from ..outcome import JUDGED, PASSED, TrialOutcome
from .policy import ERROR_POLICIES, ERRORS_COUNT, ERRORS_EXCLUDE
from .stats import holm

__all__ = [
    "EXACT_WORK_LIMIT",
    "METHOD_EXACT",
    "METHOD_NORMAL",
    "POWER",
    "RegressionResult",
    "TaskCounts",
    "compare_runs",
    "compare_variant",
    "counts_from_outcomes",
    "coverage_notes",
    "gate_counts",
    "regression_section",
    "retry_note",
]

METHOD_EXACT = "exact stratified permutation test over trials within tasks (one-sided)"
METHOD_NORMAL = (
    "stratified permutation test over trials within tasks, normal approximation (one-sided)"
)
#: Power at which :attr:`RegressionResult.min_detectable_drop` is given.
POWER = 0.8
#: Above this many multiply-adds the exact convolution gives way to the normal approximation
#: (10-50 ms of pure Python; 100 tasks x 10 trials stays exact, 100 x 20 does not).
EXACT_WORK_LIMIT = 300_000

_STD = NormalDist()
#: A p-value exactly at alpha (1/20 at 0.05) must not pass for "below" through rounding in the
#: float convolution; the tolerance only ever errs toward "not regressed".
_TIE_TOLERANCE = 1e-12


class TaskCounts(NamedTuple):
    """One variant x task of one run: passes, judged trials, and error (unjudged) trials.

    The regression gate's input for both runs: read from the index for the baseline run
    (:func:`pytest_evalrun.store.query.task_counts`), from the outcomes for this run
    (:func:`counts_from_outcomes`), and recorded in run.json so that ``evalrun merge`` reaches
    the same verdict without the baseline run at hand."""

    passed: int
    judged: int
    errors: int = 0


#: variant slug -> task slug -> counts
RunCounts = Mapping[str, Mapping[str, TaskCounts]]


@dataclass(frozen=True)
class RegressionResult:
    """One variant of a candidate run against the same variant of a baseline run."""

    #: Tasks paired (judged trials in both runs).
    n_tasks: int
    #: Weighted pass rates over the paired tasks (plain pass rates for equal trial counts).
    base_rate: float | None
    cand_rate: float | None
    #: ``cand_rate - base_rate`` (0..1 scale; negative is worse).
    diff: float | None
    #: 95% two-sided interval of ``diff``.
    ci_low: float | None
    ci_high: float | None
    #: One-sided p-value: the candidate is worse than the baseline.
    p_value: float | None
    #: ``p_value < alpha`` (a p-value within 1e-12 of alpha counts as equal).
    regressed: bool
    #: Smallest expected drop this comparison detects with 80% power at ``alpha``; None when
    #: no drop would be (or there is nothing to compare).
    min_detectable_drop: float | None
    method: str
    alpha: float = 0.05
    #: Two-sided p-value of the same test (any difference, either way): what a comparison of
    #: variants within a run reports.
    p_two_sided: float | None = None

    def to_dict(self) -> RegressionResultRecord:
        # the record's keys are this class's fields (tests/test_layoutjson.py checks them)
        return cast("RegressionResultRecord", asdict(self))


# --------------------------------------------------------------------------------------------
# The exact conditional distribution


def _hypergeom_pmf(nb: int, nc: int, s: int) -> tuple[int, list[float]]:
    """The candidate's passes given ``s`` passes over both runs: ``(lowest value, pmf)``."""
    lo = max(0, s - nb)
    hi = min(nc, s)
    total = math.comb(nb + nc, s)
    return lo, [math.comb(nc, k) * math.comb(nb, s - k) / total for k in range(lo, hi + 1)]


def _convolution_work(pmfs: list[list[float]], cap: int) -> int:
    work = 0
    size = 1
    for pmf in pmfs:
        work += min(size, cap) * len(pmf)
        size += len(pmf) - 1
    return work


def _lower_tail(pmfs: list[list[float]], t: int) -> float:
    """``P(sum of independent X_i <= t)``, each ``X_i`` on ``0..len(pmf)-1``.

    Mass above ``t`` is dropped as it goes: every ``X_i >= 0``, so it never comes back.
    """
    if t < 0:
        return 0.0
    dist = [1.0]
    for pmf in pmfs:
        size = min(len(dist) + len(pmf) - 1, t + 1)
        new = [0.0] * size
        for j, h in enumerate(pmf):
            if j >= size:
                break
            n = min(len(dist), size - j)
            new[j : j + n] = map(add, new[j : j + n], map(mul, dist[:n], repeat(h)))
        dist = new
    return min(1.0, math.fsum(dist))


def _exact_p(pmfs: list[list[float]], t: int) -> float | None:
    """``P(sum X_i <= t)``, or None when the convolution would exceed the work limit.

    Only the smaller side of the distribution is built: above the middle of the range, the
    complement ``P(sum X_i > t)`` is the lower tail of the mirrored variables ``top_i - X_i``.
    """
    top = sum(len(pmf) - 1 for pmf in pmfs)
    if 2 * t <= top:
        if _convolution_work(pmfs, t + 1) > EXACT_WORK_LIMIT:
            return None
        return _lower_tail(pmfs, t)
    mirrored = [pmf[::-1] for pmf in pmfs]
    if _convolution_work(mirrored, top - t) > EXACT_WORK_LIMIT:
        return None
    return max(0.0, 1.0 - _lower_tail(mirrored, top - t - 1))


def _exact_upper_p(pmfs: list[list[float]], t: int) -> float | None:
    """``P(sum X_i >= t)``: the lower tail of the mirrored variables ``top_i - X_i``."""
    top = sum(len(pmf) - 1 for pmf in pmfs)
    return _exact_p([pmf[::-1] for pmf in pmfs], top - t)


# --------------------------------------------------------------------------------------------
# Power


def _power(
    delta: float,
    tasks: Mapping[tuple[int, int, float, float], int],
    z_alpha: float,
) -> tuple[float, float]:
    """Approximate power of the test, and the expected weighted drop, for a drop ``delta``.

    ``tasks`` maps ``(n_b, n_c, rate, variance bias)`` to how many tasks have it.
    """
    shift = 0.0  # W * expected drop
    w_total = 0.0
    var0 = 0.0
    var1 = 0.0
    for (nb, nc, p, bias), count in tasks.items():
        n = nb + nc
        w = nb * nc / n
        q = max(0.0, p - delta)
        pbar = (nb * p + nc * q) / n
        w_total += count * w
        shift += count * w * (p - q)
        var0 += count * w * (pbar * (1.0 - pbar) + bias)
        var1 += count * w * w * ((p * (1.0 - p) + bias) / nb + (q * (1.0 - q) + bias) / nc)
    drop = shift / w_total
    if var1 <= 0.0:
        return (1.0 if shift - z_alpha * math.sqrt(var0) - 0.5 > 0.0 else 0.0), drop
    # Continuity correction 0.5: the statistic is an integer and the exact test's critical
    # value sits on that lattice below the normal one.
    return _STD.cdf((shift - z_alpha * math.sqrt(var0) - 0.5) / math.sqrt(var1)), drop


def _min_detectable_drop(
    tasks: Mapping[tuple[int, int, float, float], int], alpha: float
) -> float | None:
    z_alpha = _STD.inv_cdf(1.0 - alpha)
    power, drop = _power(1.0, tasks, z_alpha)
    if power < POWER or drop <= 0.0:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(20):  # delta to within 1e-6 (a drop is shown to 0.1 pp)
        mid = 0.5 * (lo + hi)
        if _power(mid, tasks, z_alpha)[0] >= POWER:
            hi = mid
        else:
            lo = mid
    return _power(hi, tasks, z_alpha)[1]


# --------------------------------------------------------------------------------------------
# The comparison


def _adjusted_var(x: int, n: int) -> float:
    p = (x + 1) / (n + 2)
    return p * (1.0 - p) / n


def _check(name: str, counts: Mapping[str, tuple[int, ...]]) -> None:
    for task, c in counts.items():
        k, n = c[0], c[1]
        if n < 0 or k < 0 or k > n:
            raise ValueError(f"{name}[{task!r}] needs 0 <= passes <= judged, got ({k}, {n})")


def compare_variant(
    base: Mapping[str, tuple[int, ...]],
    cand: Mapping[str, tuple[int, ...]],
    *,
    alpha: float = 0.05,
) -> RegressionResult:
    """Is ``cand`` worse than ``base``? See the module docstring for the method.

    ``base`` and ``cand`` map a task name to ``(passes, judged trials)`` of one variant in the
    baseline and the candidate run. Tasks present in both with at least one judged trial in
    each are paired; the others are ignored. With no paired task every number is None and
    ``regressed`` is False.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    _check("base", base)
    _check("cand", cand)
    pairs = [
        (base[t][0], base[t][1], cand[t][0], cand[t][1])
        for t in sorted(base)
        if t in cand and base[t][1] > 0 and cand[t][1] > 0
    ]
    if not pairs:
        return RegressionResult(
            n_tasks=0,
            base_rate=None,
            cand_rate=None,
            diff=None,
            ci_low=None,
            ci_high=None,
            p_value=None,
            regressed=False,
            min_detectable_drop=None,
            method=METHOD_EXACT,
            alpha=alpha,
        )

    w_total = 0.0
    base_sum = 0.0
    cand_sum = 0.0
    var_sum = 0.0
    t_obs = 0  # candidate passes on tasks whose conditional distribution is not a point
    t_min = 0
    null_mean = 0.0
    null_var = 0.0
    pmfs: list[list[float]] = []
    design: Counter[tuple[int, int, float, float]] = Counter()
    for xb, nb, xc, nc in pairs:
        n = nb + nc
        s = xb + xc
        w = nb * nc / n
        w_total += w
        base_sum += w * xb / nb
        cand_sum += w * xc / nc
        var_sum += w * w * (_adjusted_var(xb, nb) + _adjusted_var(xc, nc))
        pooled = s / n
        design[nb, nc, pooled, pooled * (1.0 - pooled) / (n - 1)] += 1
        if 0 < s < n:
            lo, pmf = _hypergeom_pmf(nb, nc, s)
            t_obs += xc
            t_min += lo
            null_mean += nc * s / n
            null_var += nb * nc * s * (n - s) / (n * n * (n - 1))
            pmfs.append(pmf)

    base_rate = base_sum / w_total
    cand_rate = cand_sum / w_total
    diff = cand_rate - base_rate
    half = (_STD.inv_cdf(0.975) * math.sqrt(var_sum) + 0.5) / w_total
    method = METHOD_EXACT
    # No pmf: every task all-pass or all-fail over both runs, no evidence either way.
    p_value = _exact_p(pmfs, t_obs - t_min) if pmfs else 1.0
    p_upper = _exact_upper_p(pmfs, t_obs - t_min) if pmfs else 1.0
    if p_value is None or p_upper is None:
        method = METHOD_NORMAL
        sd = math.sqrt(null_var)
        p_value = _STD.cdf((t_obs - null_mean + 0.5) / sd)
        p_upper = 1.0 - _STD.cdf((t_obs - null_mean - 0.5) / sd)
    p_two = min(1.0, 2.0 * min(p_value, p_upper))
    return RegressionResult(
        n_tasks=len(pairs),
        base_rate=base_rate,
        cand_rate=cand_rate,
        diff=diff,
        ci_low=max(-1.0, diff - half),
        ci_high=min(1.0, diff + half),
        p_value=p_value,
        regressed=p_value < alpha - _TIE_TOLERANCE,
        min_detectable_drop=_min_detectable_drop(design, alpha),
        method=method,
        alpha=alpha,
        p_two_sided=p_two,
    )


# --------------------------------------------------------------------------------------------
# Trial rows


class Row(Protocol):
    """A trial row: anything indexable by ``"variant"``, ``"task"`` and ``"status"`` (a dict,
    a ``sqlite3.Row`` of the index)."""

    def __getitem__(self, key: str, /) -> Any: ...


def _counts(rows: Iterable[Row]) -> dict[str, dict[str, tuple[int, int]]]:
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for row in rows:
        variant = out.setdefault(str(row["variant"]), {})
        status = row["status"]
        if status not in JUDGED:
            continue  # errors never enter a pass rate
        task = str(row["task"])
        k, n = variant.get(task, (0, 0))
        variant[task] = (k + (status == PASSED), n + 1)
    return out


def compare_runs(
    base_rows: Iterable[Row],
    cand_rows: Iterable[Row],
    alpha: float = 0.05,
) -> dict[str, RegressionResult]:
    """:func:`compare_variant` for every variant of the candidate run.

    Rows are trials (the last attempt of each): ``row["variant"]``, ``row["task"]`` and
    ``row["status"]`` (``passed``, ``failed``, ``timeout`` are judged; ``error`` is not).
    The result maps each variant of ``cand_rows``, in order of first appearance, to its
    comparison; a variant absent from the baseline gets ``n_tasks == 0`` and is not regressed.
    Variants only in the baseline are not in the result.
    """
    base = _counts(base_rows)
    cand = _counts(cand_rows)
    return {v: compare_variant(base.get(v, {}), counts, alpha=alpha) for v, counts in cand.items()}


def counts_from_outcomes(outcomes: Iterable[TrialOutcome]) -> dict[str, dict[str, TaskCounts]]:
    """``{variant slug: {task slug: TaskCounts}}`` of outcomes (the last attempt of each trial;
    a cell with only errors is present with ``judged == 0``)."""
    acc: dict[str, dict[str, list[int]]] = {}
    for o in outcomes:
        cell = acc.setdefault(o.variant_slug or o.variant, {}).setdefault(
            o.task_slug or o.task, [0, 0, 0]
        )
        if o.status in JUDGED:
            cell[0] += int(o.status == PASSED)
            cell[1] += 1
        else:
            cell[2] += 1
    return {v: {t: TaskCounts(*c) for t, c in tasks.items()} for v, tasks in acc.items()}


def gate_counts(counts: TaskCounts, errors: str = ERRORS_COUNT) -> tuple[int, int]:
    """``(passes, trials)`` of one cell as a gate sees it: under ``count`` an error trial is a
    trial that did not pass; under ``exclude`` only judged trials count."""
    if errors == ERRORS_COUNT:
        return counts.passed, counts.judged + counts.errors
    return counts.passed, counts.judged


def _check_policy(errors: str) -> None:
    if errors not in ERROR_POLICIES:
        raise ValueError(f"errors must be one of {', '.join(ERROR_POLICIES)}, got {errors!r}")


#: What the regression gate and the comparisons of variants answer.
QUESTION_THESE_TASKS = "these tasks"
#: The family-wise rule of the regression gate.
FAMILY_HOLM = "Holm"


def retry_note(base_rerun_judged: int | None, cand_rerun_judged: int | None) -> str | None:
    """A warning when one run retried judged trials (``--eval-retry failed,...``) and the other
    did not: retrying failures raises a pass rate, so the comparison is biased (a drop can hide
    behind the retried run's gain, or a false one appear)."""
    if base_rerun_judged is None or cand_rerun_judged is None:
        return None
    if (base_rerun_judged > 0) == (cand_rerun_judged > 0):
        return None
    which, other = ("this run", "the baseline run")
    if base_rerun_judged > 0:
        which, other = other, which
    n = max(base_rerun_judged, cand_rerun_judged)
    return (
        f"unfair comparison: {which} ran {n} judged trial(s) again (--eval-retry) and {other} "
        "did not; retrying failures raises a pass rate, so a drop can hide behind the retries "
        "(or a false one appear): compare runs with the same retry policy"
    )


def regression_section(
    base: RunCounts,
    cand: RunCounts,
    *,
    baseline_run: str,
    alpha: float,
    variant_names: Mapping[str, str],
    errors: str = ERRORS_COUNT,
    selected_tasks: Collection[str] | None = None,
    base_rerun_judged: int | None = None,
    cand_rerun_judged: int | None = None,
) -> RegressionSection:
    """The regression section of an experiment's summary: each variant of the candidate run
    against the same variant of the baseline run. Pure: both runs are given as counts.

    ``variant_names``: slug -> display name, in report order. ``errors``: the error policy
    (:mod:`.policy`): under ``count`` both runs' error trials count as trials that did not pass
    (the null hypothesis stays symmetric) and a variant fails the gate when a task judged in
    the baseline has no judged trial in this run ("dropped"); under ``exclude`` errors leave the
    test and dropped tasks are only listed. ``selected_tasks``: the task slugs this run
    selected (``-k``); baseline tasks outside it are listed as not selected, not dropped (None:
    every task of the baseline is expected). ``base_rerun_judged`` / ``cand_rerun_judged``:
    judged trials each run ran again with ``--eval-retry`` (a warning when one did and the
    other did not; None: unknown).

    Family-wise: the variants with a paired task are tested together; a variant is significantly
    worse when its Holm-adjusted one-sided p-value is below ``alpha``, so with no real change
    the gate fails in at most ``alpha`` of runs however many variants it tests.
    """
    _check_policy(errors)
    rows: list[RegressionVariant] = []
    results: list[RegressionResult] = []
    for slug, name in variant_names.items():
        if slug not in cand and slug not in base:
            continue
        base_v = base.get(slug, {})
        cand_v = cand.get(slug, {})
        b = {t: gate_counts(c, errors) for t, c in base_v.items()}
        c_ = {t: gate_counts(c, errors) for t, c in cand_v.items()}
        judged_before = [t for t, c in sorted(base_v.items()) if c.judged > 0]
        not_selected = (
            [t for t in judged_before if t not in selected_tasks]
            if selected_tasks is not None
            else []
        )
        dropped = [
            t
            for t in judged_before
            if t not in not_selected and (t not in cand_v or cand_v[t].judged == 0)
        ]
        if selected_tasks is not None:
            b = {t: v for t, v in b.items() if t in selected_tasks}
        results.append(compare_variant(b, c_, alpha=alpha))
        rows.append(
            {
                "variant": name,
                "in_baseline": slug in base,
                "tasks_dropped": dropped,
                "tasks_not_selected": not_selected,
                "errors": sum(c.errors for c in cand_v.values()),
                "baseline_errors": sum(c.errors for c in base_v.values()),
            }
        )
    tested = [i for i, r in enumerate(results) if r.p_value is not None]
    adjusted = holm([results[i].p_value or 0.0 for i in tested])
    p_adjusted: dict[int, float] = dict(zip(tested, adjusted, strict=True))
    variants: list[RegressionVariant] = []
    for i, (row, result) in enumerate(zip(rows, results, strict=True)):
        adj = p_adjusted.get(i)
        significant = adj is not None and adj < alpha - _TIE_TOLERANCE
        reasons = []
        if significant:
            reasons.append("significantly worse")
        if row["tasks_dropped"] and errors == ERRORS_COUNT:
            reasons.append(
                f"{len(row['tasks_dropped'])} task(s) judged in the baseline have no judged "
                "trial now"
            )
        variants.append(
            {
                **row,
                **result.to_dict(),
                "tasks_paired": result.n_tasks,
                "p_adjusted": adj,
                "significant": significant,
                "regressed": bool(reasons),
                "reasons": reasons,
            }
        )
    regressed = [v["variant"] for v in variants if v["regressed"]]
    notes = []
    if errors == ERRORS_EXCLUDE:
        notes.append(
            "errors excluded (--eval-errors exclude): error trials are left out of this test "
            "and a task with only errors is not compared"
        )
    note = retry_note(base_rerun_judged, cand_rerun_judged)
    if note:
        notes.append(note)
    return {
        "baseline_run": baseline_run,
        "alpha": alpha,
        "errors": errors,
        "test": "one-sided test, paired by task",
        "method": METHOD_EXACT,
        "question": QUESTION_THESE_TASKS,
        "family": FAMILY_HOLM,
        "variants_tested": len(tested),
        "retry_mismatch": note is not None,
        "notes": notes,
        "variants": variants,
        "regressed": regressed,
        "passed": not regressed,
    }


def coverage_notes(
    baseline_run: str,
    base: Mapping[str, Mapping[str, TaskCounts]],
    outcomes: Iterable[TrialOutcome],
    variant_names: Mapping[str, str],
) -> list[str]:
    """Notes naming, per variant, the tasks judged in this run that the baseline run has no
    judged trial of (they are not compared: the baseline is partial for this run)."""
    judged: dict[str, set[str]] = {}
    for o in outcomes:
        if o.judged:
            judged.setdefault(o.variant_slug or o.variant, set()).add(o.task_slug or o.task)
    notes = []
    for slug, name in variant_names.items():
        mine = judged.get(slug, set())
        theirs = {t for t, c in base.get(slug, {}).items() if c.judged}
        missing = sorted(mine - theirs)
        if missing and mine:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            notes.append(
                f"regression gate: baseline run {baseline_run} has no judged trial of "
                f"{len(missing)} of the {len(mine)} tasks variant {name!r} ran here "
                f"({shown}): those are not compared"
            )
    return notes
