"""Simulate the regression gate's candidate tests: false-alarm rate and power.

    python bench/sim_regression.py [--runs 2000] [--seed 20260105]

For each scenario (tasks, trials per task in each run, true per-task pass rates, and the drop
applied to the candidate run), draws ``--runs`` pairs of runs with ``random.Random(seed)`` and
counts how often each candidate test says "regressed" at alpha = 0.05 (one-sided). Scenarios
without a drop measure the false-alarm rate (must be <= 0.05); the others measure power.

Candidates:

- ``paired-t``: one-sided paired t-test on per-task rate differences (report/stats.py's t CDF).
- ``sign-flip``: exact sign-flip randomization test over tasks, statistic sum of per-task rate
  differences, all 2^n sign patterns (by convolution).
- ``cmh-normal``: the Cochran-Mantel-Haenszel statistic with its normal approximation and a
  continuity correction (regression.py's fallback for huge inputs).
- ``exact-strat``: the exact stratified permutation test of pytest_evalrun/report/regression.py
  (the chosen one).

Also prints how well ``min_detectable_drop`` predicts power, the time of one comparison, the
whole gate's family-wise false-alarm rate with 1-10 variants (each at alpha, as 0.2.0 did,
against Holm, as ``regression_section`` does; ``--only family``), the power when half the new
failures surface as errors (errors counted or excluded), and the per-cell min_pass_rate gate's
false-fail rate and power (point estimate, as 0.2.0, against the upper-bound rule of
report/summary.py; ``--only cells``). docs/regression.md and docs/reports.md quote its output.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_evalrun.report.regression import TaskCounts, compare_variant, regression_section
from pytest_evalrun.report.stats import binom_cdf, t_cdf

ALPHA = 0.05
Counts = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Scenario:
    name: str
    rates: Sequence[float]
    base_trials: Sequence[int]
    cand_trials: Sequence[int]
    drop: float = 0.0
    #: Not the null hypothesis: each run moves each task's rate by U(-jitter, +jitter) (a
    #: run-level effect such as a flaky service), with no change of the agent.
    jitter: float = 0.0


def spread(n: int, lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [(lo + hi) / 2]


def scenarios() -> list[Scenario]:
    rng = random.Random(7)
    uneq_rates = [round(rng.uniform(0.1, 0.9), 2) for _ in range(10)]
    uneq_b = [rng.randint(1, 5) for _ in range(10)]
    uneq_c = [rng.randint(1, 5) for _ in range(10)]
    return [
        Scenario("null 10 tasks x 5, rates 0.4-0.9", spread(10, 0.4, 0.9), [5] * 10, [5] * 10),
        Scenario("null 3 tasks x 1, rates 0.5", [0.5] * 3, [1] * 3, [1] * 3),
        Scenario("null 3 tasks x 5, rates 0.3-0.7", spread(3, 0.3, 0.7), [5] * 3, [5] * 3),
        Scenario("null 5 tasks x 2, rates 0.5", [0.5] * 5, [2] * 5, [2] * 5),
        Scenario("null 10 tasks x 3, rates 0.9-1.0", spread(10, 0.9, 1.0), [3] * 10, [3] * 10),
        Scenario("null 10 tasks x 3, rates 0.0-0.1", spread(10, 0.0, 0.1), [3] * 10, [3] * 10),
        Scenario("null 30 tasks x 1, rates 0.05-0.95", spread(30, 0.05, 0.95), [1] * 30, [1] * 30),
        Scenario("null 10 tasks, unequal 1-5 trials", uneq_rates, uneq_b, uneq_c),
        Scenario("null 10 tasks, base 1 / cand 5 trials, 0.9", [0.9] * 10, [1] * 10, [5] * 10),
        Scenario("null 10 tasks, base 5 / cand 1 trials, 0.9", [0.9] * 10, [5] * 10, [1] * 10),
        Scenario(
            "null 100 tasks x 20, rates 0.05-0.95 (*)",
            spread(100, 0.05, 0.95),
            [20] * 100,
            [20] * 100,
        ),
        Scenario(
            "null 1000 tasks x 5, rates 0.05-0.95 (*)",
            spread(1000, 0.05, 0.95),
            [5] * 1000,
            [5] * 1000,
        ),
        Scenario(
            "null 100 tasks x 5, rates 0.05-0.95", spread(100, 0.05, 0.95), [5] * 100, [5] * 100
        ),
        Scenario("drop 0.3: 10 tasks x 5, 0.4-0.9", spread(10, 0.4, 0.9), [5] * 10, [5] * 10, 0.3),
        Scenario("drop 0.3: 10 tasks x 3, 0.4-0.9", spread(10, 0.4, 0.9), [3] * 10, [3] * 10, 0.3),
        Scenario("drop 0.3: 5 tasks x 5, 0.4-0.9", spread(5, 0.4, 0.9), [5] * 5, [5] * 5, 0.3),
        Scenario("drop 0.1: 50 tasks x 5, 0.1-0.9", spread(50, 0.1, 0.9), [5] * 50, [5] * 50, 0.1),
        Scenario(
            "run jitter 0.1: 10 tasks x 5, 0.4-0.9",
            spread(10, 0.4, 0.9),
            [5] * 10,
            [5] * 10,
            jitter=0.1,
        ),
        Scenario(
            "run jitter 0.1: 50 tasks x 10, 0.2-0.8",
            spread(50, 0.2, 0.8),
            [10] * 50,
            [10] * 50,
            jitter=0.1,
        ),
    ]


def draw(rng: random.Random, sc: Scenario) -> tuple[Counts, Counts]:
    base: Counts = {}
    cand: Counts = {}
    for i, (p, nb, nc) in enumerate(zip(sc.rates, sc.base_trials, sc.cand_trials, strict=True)):
        q = max(0.0, p - sc.drop)
        if sc.jitter:
            p = min(1.0, max(0.0, p + rng.uniform(-sc.jitter, sc.jitter)))
            q = min(1.0, max(0.0, q + rng.uniform(-sc.jitter, sc.jitter)))
        base[f"t{i}"] = (sum(rng.random() < p for _ in range(nb)), nb)
        cand[f"t{i}"] = (sum(rng.random() < q for _ in range(nc)), nc)
    return base, cand


def _diffs(base: Counts, cand: Counts) -> list[Fraction]:
    return [Fraction(cand[t][0], cand[t][1]) - Fraction(base[t][0], base[t][1]) for t in base]


def paired_t(base: Counts, cand: Counts) -> float:
    d = [float(x) for x in _diffs(base, cand)]
    n = len(d)
    mean = statistics.fmean(d)
    sd = statistics.stdev(d) if n > 1 else 0.0
    if sd <= 1e-12:
        return 1.0 if mean >= 0 else 0.0 if n > 1 else 1.0
    return t_cdf(mean / (sd / math.sqrt(n)), n - 1)


def sign_flip(base: Counts, cand: Counts) -> float:
    d = _diffs(base, cand)
    obs = sum(d)
    dist: dict[Fraction, int] = {Fraction(0): 1}
    for x in d:
        new: dict[Fraction, int] = {}
        for v, c in dist.items():
            for s in (x, -x):
                new[v + s] = new.get(v + s, 0) + c
        dist = new
    return sum(c for v, c in dist.items() if v <= obs) / 2 ** len(d)


def cmh_normal(base: Counts, cand: Counts) -> float:
    t = mean = var = 0.0
    for task, (xb, nb) in base.items():
        xc, nc = cand[task]
        n, s = nb + nc, xb + xc
        if 0 < s < n:
            t += xc
            mean += nc * s / n
            var += nb * nc * s * (n - s) / (n * n * (n - 1))
    if var == 0:
        return 1.0
    return statistics.NormalDist().cdf((t - mean + 0.5) / math.sqrt(var))


def exact_strat(base: Counts, cand: Counts) -> float:
    p = compare_variant(base, cand, alpha=ALPHA).p_value
    assert p is not None
    return p


CANDIDATES: dict[str, Callable[[Counts, Counts], float]] = {
    "paired-t": paired_t,
    "sign-flip": sign_flip,
    "cmh-normal": cmh_normal,
    "exact-strat": exact_strat,
}


def rejection_rates(sc: Scenario, runs: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    hits = dict.fromkeys(CANDIDATES, 0)
    for _ in range(runs):
        base, cand = draw(rng, sc)
        for name, test in CANDIDATES.items():
            if name == "sign-flip" and len(base) > 30:
                continue  # its exact distribution grows too large; "-" in the table
            hits[name] += test(base, cand) < ALPHA
    return {k: v / runs for k, v in hits.items()}


def mdd_check(runs: int, seed: int) -> None:
    """Median reported min_detectable_drop under no change, and the power at that drop."""
    for n_tasks, trials in ((10, 5), (10, 3), (30, 3), (100, 5)):
        rates = spread(n_tasks, 0.4, 0.9)
        sc = Scenario("", rates, [trials] * n_tasks, [trials] * n_tasks)
        rng = random.Random(seed)
        mdds = []
        for _ in range(min(runs, 500)):
            base, cand = draw(rng, sc)
            mdds.append(compare_variant(base, cand).min_detectable_drop or 1.0)
        mdd = statistics.median(mdds)
        at = Scenario("", rates, sc.base_trials, sc.cand_trials, drop=mdd)
        rng = random.Random(seed + 1)
        caught = 0
        for _ in range(runs):
            base, cand = draw(rng, at)
            caught += exact_strat(base, cand) < ALPHA
        print(
            f"  {n_tasks} tasks x {trials}, rates 0.4-0.9: median min_detectable_drop "
            f"{mdd:.3f} (IQR {statistics.quantiles(mdds, n=4)[0]:.3f}-"
            f"{statistics.quantiles(mdds, n=4)[2]:.3f}); simulated power at that drop "
            f"{caught / runs:.3f}"
        )


def coverage(runs: int, seed: int) -> None:
    """How often the 95% interval holds the true (weighted) difference."""
    for sc in scenarios():
        if sc.jitter:
            continue  # the true difference of a jittered run is not the scenario's
        w = [nb * nc / (nb + nc) for nb, nc in zip(sc.base_trials, sc.cand_trials, strict=True)]
        true = sum(
            wi * (max(0.0, p - sc.drop) - p) for wi, p in zip(w, sc.rates, strict=True)
        ) / sum(w)
        rng = random.Random(seed)
        inside = 0
        for _ in range(runs):
            r = compare_variant(*draw(rng, sc))
            assert r.ci_low is not None and r.ci_high is not None
            inside += r.ci_low <= true <= r.ci_high
        print(f"  {sc.name:46s} {inside / runs:.4f}")


def timing() -> None:
    rng = random.Random(3)
    for n_tasks, trials in ((10, 5), (100, 5), (100, 10), (100, 20), (1000, 5), (100, 100)):
        sc = Scenario("", spread(n_tasks, 0.05, 0.95), [trials] * n_tasks, [trials] * n_tasks)
        base, cand = draw(rng, sc)
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            r = compare_variant(base, cand)
            best = min(best, time.perf_counter() - t0)
        print(f"  {n_tasks} tasks x {trials}: {best * 1000:.1f} ms ({r.method})")


def _variant_counts(
    rng: random.Random, rates: Sequence[float], trials: int, drop: float, as_errors: float
) -> dict[str, TaskCounts]:
    out = {}
    for i, p in enumerate(rates):
        passed = judged = errors = 0
        q = max(0.0, p - drop)
        for _ in range(trials):
            u = rng.random()
            if u < q:
                passed += 1
                judged += 1
            elif u < p and rng.random() < as_errors:
                errors += 1
            else:
                judged += 1
        out[f"t{i}"] = TaskCounts(passed, judged, errors)
    return out


def family(runs: int, seed: int) -> None:
    """The whole gate: no change in any of V variants (10 tasks x 5, rates 0.4-0.9)."""
    rates = spread(10, 0.4, 0.9)
    for n_variants in (1, 2, 5, 10):
        rng = random.Random(seed + n_variants)
        per_alpha = holm = 0
        for _ in range(runs):
            base = {f"v{v}": _variant_counts(rng, rates, 5, 0.0, 0.0) for v in range(n_variants)}
            cand = {f"v{v}": _variant_counts(rng, rates, 5, 0.0, 0.0) for v in range(n_variants)}
            sec = regression_section(
                base, cand, baseline_run="b", alpha=ALPHA, variant_names={v: v for v in cand}
            )
            per_alpha += any(v["p_value"] < ALPHA for v in sec["variants"])
            holm += bool(sec["regressed"])
        print(
            f"  {n_variants:2d} variant(s): run fails {per_alpha / runs:.4f} each at alpha, "
            f"{holm / runs:.4f} Holm"
        )
    rng = random.Random(seed)
    caught = {"count": 0, "exclude": 0}
    for _ in range(runs):
        base = {"v": _variant_counts(rng, rates, 5, 0.0, 0.0)}
        cand = {"v": _variant_counts(rng, rates, 5, 0.3, 0.5)}
        for errors in caught:
            sec = regression_section(
                base, cand, baseline_run="b", alpha=ALPHA, variant_names={"v": "v"},
                errors=errors,
            )  # fmt: skip
            caught[errors] += bool(sec["regressed"])
    print(
        f"  30-point drop, half the new failures as errors: caught {caught['count'] / runs:.4f} "
        f"(errors counted), {caught['exclude'] / runs:.4f} (errors excluded)"
    )


def _cell_fails_point(k: int, n: int, gate: float, m: int) -> bool:
    return k / n < gate - 1e-12


def _cell_fails_bound(k: int, n: int, gate: float, m: int) -> bool:
    return binom_cdf(k, n, gate) < ALPHA / m


def cell_gates(runs: int, seed: int) -> None:
    """Per-cell gates (gate 0.6): share of runs failing, old rule (point estimate) and new."""
    designs = [(10, 3, 2, 0.8), (20, 5, 3, 0.8), (10, 10, 2, 0.6), (10, 10, 2, 0.8)]
    for n_tasks, trials, n_variants, rate in designs:
        m = n_tasks * n_variants
        rng = random.Random(seed)
        old = new = 0
        for _ in range(runs):
            ks = [sum(rng.random() < rate for _ in range(trials)) for _ in range(m)]
            old += any(_cell_fails_point(k, trials, 0.6, m) for k in ks)
            new += any(_cell_fails_bound(k, trials, 0.6, m) for k in ks)
        print(
            f"  every cell at {rate}, {n_tasks} tasks x {trials} x {n_variants}: runs failed "
            f"{old / runs:.4f} (point estimate), {new / runs:.4f} (upper bound)"
        )
    for trials in (3, 5, 10, 20):
        for bad in (0.0, 0.1, 0.2, 0.3):
            rng = random.Random(seed)
            caught = sum(
                _cell_fails_bound(sum(rng.random() < bad for _ in range(trials)), trials, 0.6, 20)
                for _ in range(runs)
            )
            print(f"  one of 20 cells at {bad}, {trials} trials: caught {caught / runs:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20260105)
    ap.add_argument(
        "--only", choices=("rates", "mdd", "coverage", "timing", "family", "cells"), default=None
    )
    args = ap.parse_args()
    if args.only in (None, "rates"):
        names = list(CANDIDATES)
        print(f"rate of 'regressed' at alpha={ALPHA} over {args.runs} runs (seed {args.seed})")
        print(f"{'scenario':46s}" + "".join(f"{n:>12s}" for n in names))
        for sc in scenarios():
            rates = rejection_rates(sc, args.runs, args.seed)
            cells = [
                f"{'-':>12s}" if n == "sign-flip" and len(sc.rates) > 30 else f"{rates[n]:12.4f}"
                for n in names
            ]
            print(f"{sc.name:46s}" + "".join(cells), flush=True)
    if args.only in (None, "mdd"):
        print("min_detectable_drop against simulated power:")
        mdd_check(args.runs, args.seed)
    if args.only in (None, "coverage"):
        print("coverage of the 95% interval of diff:")
        coverage(args.runs, args.seed)
    if args.only in (None, "timing"):
        print("time of one compare_variant (best of 5):")
        timing()
    if args.only in (None, "family"):
        print("the regression gate's family (regression_section), no change, 10 tasks x 5:")
        family(min(args.runs, 1000), args.seed)
    if args.only in (None, "cells"):
        print("per-cell min_pass_rate gates, gate 0.6, alpha 0.05 over the cells:")
        cell_gates(args.runs, args.seed)


if __name__ == "__main__":
    main()
