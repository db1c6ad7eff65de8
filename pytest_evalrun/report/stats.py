"""Statistics for eval reports: pure, dependency-free functions.

Everything here is plain maths over numbers (no pytest, no I/O, no scipy; the normal quantile
is the standard library's :class:`statistics.NormalDist`):

- :func:`wilson_interval`: the Wilson score interval for a binomial proportion (a variant's
  overall pass rate). Unlike the normal ("Wald") interval it stays inside [0, 1] and behaves
  sensibly at 0/n and n/n, which is where small evals live.
- :func:`pass_at_k`: the unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large
  Language Models Trained on Code"), ``1 - C(n-c, k) / C(n, k)``.
- :func:`clustered_interval`: an interval for the pass rate of *tasks like these* (the mean
  over the population of tasks the suite stands for), clustered by task; see below.
- :func:`binom_cdf`, :func:`binom_upper_bound`: the exact one-sided binomial test and its
  (Clopper-Pearson) upper confidence bound, with which a cell's ``min_pass_rate`` gate is judged.
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`t_cdf`, :func:`t_ppf`: Student's t distribution (the clustered interval's quantile).

The reports compare variants with :func:`pytest_evalrun.report.regression.compare_variant`.

Two questions, two intervals
----------------------------
The Wilson interval of a variant's ``passed/judged`` answers "what is the pass rate on *these*
tasks?": the tasks are fixed and only the trials are random. A suite usually stands for more
tasks than it has: "what is the pass rate on *tasks like these*?" has the tasks' own spread as a
second source of variation, which Wilson ignores (in a simulation with Beta-distributed task
rates it held that rate 54-82% of the time). :func:`clustered_interval` answers the second
question around the same pass rate (passed / trials): its variance is the cluster-robust
(sandwich) variance of that ratio with tasks as the clusters (with equal trials per task, the
between-task variance of the per-task rates over the number of tasks), turned into a
Wilson-type score interval on the effective number of trials (``trials / design effect``, the
design effect never below 1) with a Student t quantile on ``tasks - 1`` degrees of freedom.
It stays in [0, 1] and covered the tasks' mean rate 95-99% of the time in the seeded
simulations of tests/test_stats_sim.py (89.7-98.8% over a wider exploration: 5-50 tasks, 1-10
trials, Beta(0.35, 0.15) to Beta(14, 6) task rates, the low end at 5 tasks).

Choice of test for the comparison
---------------------------------
The paired unit is the *task*: each pair is (baseline pass rate on task i, candidate pass rate
on task i). Trials of one task are not independent draws from the suite (task difficulty is
shared by both variants), so pairing by task removes the between-task variance that dominates
evals; this is the approach of Miller 2024, "Adding Error Bars to Evals" (paired differences,
standard error over questions). We run a **paired t-test** on the per-task differences
(candidate - baseline): ``t = mean(d) / (sd(d) / sqrt(n))`` with ``n - 1`` degrees of freedom,
a two-sided p-value from the Student t distribution, and a 95% interval
``mean(d) +/- t_{0.975, n-1} * se``. The t CDF is computed through the regularized incomplete
beta function (Numerical Recipes' continued fraction ``betacf``); quantiles by bisection.

Per-task pass rates are bounded and often 0 or 1, so the t-test's normality assumption can be
rough with few tasks. As a robustness figure we also give an **exact two-sided sign test**
p-value: under the null, each task with a non-zero difference is equally likely to favour
either variant; ties (difference 0) are dropped; ``p = min(1, 2 * P(X <= min(wins, losses)))``
with ``X ~ Binomial(wins + losses, 1/2)``. It uses only the direction of each difference, so it
is conservative but assumption-free.

Degenerate cases (documented, tested):

- fewer than 2 paired tasks: no t-test (``t``, ``p_value`` and the interval are None); the sign
  test is still given.
- zero variance of the differences (every task moved by exactly the same amount, compared
  with a relative tolerance of 1e-12 because pass-rate differences are rationals computed in
  floating point): the t statistic is 0/0 or +/-inf.

  * all differences 0 (identical per-task pass rates): no difference was observed anywhere,
    so ``t = 0``, ``p_value = 1.0``; the interval is None (a zero-width interval would claim a
    precision the data do not have).
  * all differences equal and non-zero: ``t``, ``p_value`` and the interval are None rather
    than ``p = 0``: an infinite t statistic from, say, two tasks that both went 0/1 -> 1/1 is
    not evidence of anything certain. The sign test p-value carries the evidence there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

__all__ = [
    "binom_cdf",
    "binom_upper_bound",
    "clustered_interval",
    "holm",
    "pass_at_k",
    "t_cdf",
    "t_ppf",
    "wilson_interval",
]


# --------------------------------------------------------------------------------------------
# Wilson interval and pass@k


def _two_sided_z(confidence: float) -> float:
    """The standard normal quantile of a two-sided ``confidence`` interval (1.96 for 95%)."""
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials.

    Returns ``(0.0, 1.0)`` when ``n == 0`` (nothing is known). The bounds are exactly 0.0 when
    ``k == 0`` and exactly 1.0 when ``k == n``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k!r}, n={n!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n == 0:
        return (0.0, 1.0)
    z = _two_sided_z(confidence)
    z2 = z * z
    p = k / n
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``.

    ``n`` trials of which ``c`` passed; the probability that at least one of ``k`` trials drawn
    without replacement from the ``n`` passed. Needs ``0 <= c <= n`` and ``1 <= k <= n``.
    Computed with exact integers (``math.comb``) and one correctly rounded division.
    """
    if n < 1 or c < 0 or c > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and n >= 1, got n={n!r}, c={c!r}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got k={k!r}, n={n!r}")
    if n - c < k:
        return 1.0
    if k == 1:
        return c / n  # the same value, without a rounding step
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --------------------------------------------------------------------------------------------
# Student t distribution via the regularized incomplete beta function

_BETACF_MAXIT = 500
_BETACF_EPS = 3.0e-16
_FPMIN = 1.0e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (Numerical Recipes, modified Lentz)."""
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _FPMIN:
        d = _FPMIN
    d = 1.0 / d
    h = d
    # Converges in O(sqrt(max(a, b))) steps on the side of the switch point it is used on.
    maxit = _BETACF_MAXIT + int(10.0 * math.sqrt(max(a, b)))
    for m in range(1, maxit + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = 1.0 + aa / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = 1.0 + aa / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _BETACF_EPS:
            return h
    # Not converged: only for extreme a, b far outside what reports use; the value is still
    # the best approximation we have.
    return h  # pragma: no cover


def _ibeta(a: float, b: float, x: float, y: float) -> float:
    """``I_x(a, b)`` given both ``x`` and ``y = 1 - x``, each computed without cancellation."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_bt = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    bt = math.exp(log_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, y) / b


def _t_central(t: float, df: float) -> float:
    """``P(|T| <= |t|)`` for ``df`` degrees of freedom (accurate when it is small)."""
    tt = t * t
    if math.isinf(tt):
        return 1.0
    # With x = df / (df + t^2) and y = t^2 / (df + t^2): P(|T| <= |t|) = I_y(1/2, df/2).
    return _ibeta(0.5, df / 2.0, tt / (df + tt), df / (df + tt))


def _t_tail(t: float, df: float) -> float:
    """Upper tail ``P(T > |t|)`` for ``df`` degrees of freedom (accurate when it is small)."""
    tt = t * t
    if math.isinf(tt):
        return 0.0
    # P(T > |t|) = I_x(df/2, 1/2) / 2 with x = df / (df + t^2).
    return 0.5 * _ibeta(df / 2.0, 0.5, df / (df + tt), tt / (df + tt))


def t_cdf(t: float, df: float) -> float:
    """Student t CDF, ``P(T <= t)``, for ``df > 0`` degrees of freedom."""
    if not df > 0.0:
        raise ValueError(f"t_cdf needs df > 0, got {df!r}")
    if math.isnan(t):
        raise ValueError("t_cdf needs a number, got nan")
    tail = _t_tail(t, df)
    return 1.0 - tail if t > 0.0 else tail


def t_ppf(q: float, df: float) -> float:
    """Student t quantile for ``0 < q < 1`` and ``df > 0``, by bisection on the CDF."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf needs 0 < q < 1, got {q!r}")
    if not df > 0.0:
        raise ValueError(f"t_ppf needs df > 0, got {df!r}")
    if q == 0.5:
        return 0.0
    # Near the median, solve P(|T| <= t) = |2q - 1| (exact for q in [1/4, 3/4]); in the tails,
    # solve for the tail probability directly. Either avoids cancellation.
    if 0.25 <= q <= 0.75:
        target = abs(2.0 * q - 1.0)

        def below(x: float) -> bool:
            return _t_central(x, df) < target

    else:
        target = 1.0 - q if q > 0.5 else q

        def below(x: float) -> bool:
            return _t_tail(x, df) > target

    hi = 1.0
    while below(hi):
        hi *= 2.0
        if hi > 1e300:  # pragma: no cover - unreachable for q representable in a double
            break
    lo = 0.0
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if below(mid):
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    return x if q > 0.5 else -x


# --------------------------------------------------------------------------------------------
# Intervals for tasks like these; the exact binomial test; Holm


def clustered_interval(
    counts: Sequence[tuple[int, int]], confidence: float = 0.95
) -> tuple[float, tuple[float, float]] | None:
    """The pass rate of tasks like these and its interval, clustered by task.

    ``counts``: ``(passed, trials)`` per task (tasks with no trial are left out). Returns
    ``(pass rate, (low, high))`` with the pass rate ``sum(passed) / sum(trials)`` (the figure
    the reports show), or None with no task. With one task the interval is ``(0, 1)``: one task
    says nothing about the spread of tasks. See the module docstring for the method.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    cells = [(k, n) for k, n in counts if n > 0]
    for k, n in cells:
        if k < 0 or k > n:
            raise ValueError(f"clustered_interval needs 0 <= passed <= trials, got ({k}, {n})")
    if not cells:
        return None
    n_tasks = len(cells)
    trials = sum(n for _, n in cells)
    rate = sum(k for k, _ in cells) / trials
    if n_tasks < 2:
        return rate, (0.0, 1.0)
    # the cluster-robust (sandwich) variance of the ratio estimator, tasks the clusters
    var_cluster = (
        n_tasks / (n_tasks - 1) * math.fsum((k - rate * n) ** 2 for k, n in cells) / trials**2
    )
    # the variance the same rate would have if every trial were an independent draw
    var_binomial = rate * (1.0 - rate) / trials
    design_effect = max(1.0, var_cluster / var_binomial) if var_binomial > 0.0 else 1.0
    n_eff = trials / design_effect
    q = t_ppf(1.0 - (1.0 - confidence) / 2.0, float(n_tasks - 1))
    q2 = q * q
    denom = 1.0 + q2 / n_eff
    centre = (rate + q2 / (2.0 * n_eff)) / denom
    half = (q / denom) * math.sqrt(rate * (1.0 - rate) / n_eff + q2 / (4.0 * n_eff * n_eff))
    lo = max(0.0, centre - half)
    hi = min(1.0, centre + half)
    return rate, (min(lo, rate), max(hi, rate))


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)`` (exact sum of the terms, in log space)."""
    if n < 0 or not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"binom_cdf needs n >= 0 and 0 <= p <= 1, got n={n!r}, p={p!r}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    return min(1.0, math.fsum(math.exp(_log_binom_pmf(i, n, p)) for i in range(k + 1)))


def binom_upper_bound(k: int, n: int, alpha: float) -> float:
    """The exact (Clopper-Pearson) one-sided upper confidence bound of a binomial rate at level
    ``1 - alpha``: the largest ``p`` with ``P(X <= k | n, p) >= alpha``; 1.0 when ``k == n``.

    ``binom_upper_bound(k, n, a) < t`` exactly when ``binom_cdf(k, n, t) < a`` (up to the
    bisection's 1e-12): the bound lies below a threshold when the exact one-sided test rejects
    "the rate is at least the threshold"."""
    if n < 1 or k < 0 or k > n:
        raise ValueError(f"binom_upper_bound needs 0 <= k <= n, n >= 1, got k={k!r}, n={n!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if k == n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if binom_cdf(k, n, mid) >= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): rejecting each hypothesis whose
    adjusted p-value is below ``alpha`` keeps the family-wise error rate at most ``alpha``,
    whatever the dependence between the tests."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
