"""STAND-IN for the regression test another helper writes (same API); replace on merge.

:func:`compare_variant` compares one variant's per-task pass rates in a candidate run with a
baseline run, paired by task, with a one-sided test (is the candidate worse?):

- tasks judged in both runs are paired; ``d_i = cand_rate_i - base_rate_i``;
- with at least 2 pairs and some spread: a paired t-test on ``d`` (one-sided p-value, two-sided
  95% interval of the mean difference, and the smallest drop detectable at 80% power,
  ``(t_{1-alpha} + t_{0.8}) * se``);
- otherwise a one-sided sign test over the tasks that moved (no interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .stats import t_cdf, t_ppf

__all__ = ["RegressionResult", "compare_variant"]


@dataclass(frozen=True)
class RegressionResult:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sign_test_worse(losses: int, wins: int) -> float:
    """One-sided: P(at least ``losses`` of the moved tasks got worse) under no change."""
    m = losses + wins
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(losses, m + 1))
    return min(1.0, tail / float(2**m))


def compare_variant(
    base: Mapping[str, tuple[int, int]],
    cand: Mapping[str, tuple[int, int]],
    *,
    alpha: float = 0.05,
) -> RegressionResult:
    """``base`` and ``cand`` map task -> (passes, judged trials)."""
    tasks = sorted(t for t in base if t in cand and base[t][1] > 0 and cand[t][1] > 0)
    n = len(tasks)
    if n == 0:
        return RegressionResult(0, None, None, None, None, None, None, False, None, "none")
    b = [base[t][0] / base[t][1] for t in tasks]
    c = [cand[t][0] / cand[t][1] for t in tasks]
    d = [ci - bi for bi, ci in zip(b, c, strict=False)]
    mean_b, mean_c = math.fsum(b) / n, math.fsum(c) / n
    mean_d = math.fsum(d) / n
    sd = math.sqrt(math.fsum((x - mean_d) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    if n >= 2 and sd > 1e-12:
        se = sd / math.sqrt(n)
        df = n - 1
        p = t_cdf(mean_d / se, df)
        half = t_ppf(0.975, df) * se
        mdd = (t_ppf(1 - alpha, df) + t_ppf(0.8, df)) * se
        return RegressionResult(
            n, mean_b, mean_c, mean_d, mean_d - half, mean_d + half, p,
            p < alpha and mean_d < 0, mdd, "paired t-test by task, one-sided (stand-in)",
        )  # fmt: skip
    losses = sum(1 for x in d if x < 0)
    wins = sum(1 for x in d if x > 0)
    p = _sign_test_worse(losses, wins)
    return RegressionResult(
        n, mean_b, mean_c, mean_d, None, None, p, p < alpha and mean_d < 0, None,
        "sign test by task, one-sided (stand-in)",
    )  # fmt: skip
