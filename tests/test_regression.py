"""pytest_evalrun.report.regression: the regression gate's statistics.

Three simulations (2,000 seeded runs each) show the gate is honest: with no real change it
says "regressed" in at most alpha of runs, and it catches a real 30-point drop on 10 tasks x 5
trials in at least 80% of runs. The other tests pin exact p-values (hand-derived, and by brute
force over every way the trials could have been shuffled) and the edge cases.
"""

from __future__ import annotations

import itertools
import math
import random
import sqlite3
from collections.abc import Sequence
from fractions import Fraction

import pytest

from pytest_evalrun.report import regression
from pytest_evalrun.report.regression import (
    METHOD_EXACT,
    METHOD_NORMAL,
    RegressionResult,
    TaskCounts,
    compare_runs,
    compare_variant,
    regression_section,
    retry_note,
)

ALPHA = 0.05
RUNS = 2000
Counts = dict[str, tuple[int, int]]


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def _draw(
    rng: random.Random,
    rates: Sequence[float],
    base_trials: Sequence[int],
    cand_trials: Sequence[int],
    drop: float = 0.0,
) -> tuple[Counts, Counts]:
    base: Counts = {}
    cand: Counts = {}
    for i, (p, nb, nc) in enumerate(zip(rates, base_trials, cand_trials, strict=True)):
        base[f"task-{i}"] = (_binomial(rng, nb, p), nb)
        cand[f"task-{i}"] = (_binomial(rng, nc, max(0.0, p - drop)), nc)
    return base, cand


def _spread(n: int, lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


# --------------------------------------------------------------------------------------------
# The simulations the issue asks for


def test_no_change_10_tasks_x_5_trials_false_alarms_at_most_alpha() -> None:
    rng = random.Random(20260105)
    rates = _spread(10, 0.4, 0.9)
    alarms = 0
    for _ in range(RUNS):
        base, cand = _draw(rng, rates, [5] * 10, [5] * 10)
        alarms += compare_variant(base, cand, alpha=ALPHA).regressed
    rate = alarms / RUNS
    print(f"no change, 10 tasks x 5 trials: false-alarm rate {rate:.4f} ({alarms}/{RUNS})")
    assert rate <= ALPHA, f"false-alarm rate {rate:.4f} > alpha {ALPHA}"


def test_no_change_small_awkward_designs_false_alarms_at_most_alpha() -> None:
    """Each run a new design: 3-10 tasks, 1-5 trials (different per task and per run), rates
    anywhere in [0, 1] with many at or near 0 and 1."""
    rng = random.Random(13)
    alarms = 0
    for _ in range(RUNS):
        n_tasks = rng.randint(3, 10)
        rates = [rng.choice((0.0, 0.02, 0.5, 0.98, 1.0, rng.random())) for _ in range(n_tasks)]
        base_trials = [rng.randint(1, 5) for _ in range(n_tasks)]
        cand_trials = [rng.randint(1, 5) for _ in range(n_tasks)]
        base, cand = _draw(rng, rates, base_trials, cand_trials)
        alarms += compare_variant(base, cand, alpha=ALPHA).regressed
    rate = alarms / RUNS
    print(f"no change, mixed small designs: false-alarm rate {rate:.4f} ({alarms}/{RUNS})")
    assert rate <= ALPHA, f"false-alarm rate {rate:.4f} > alpha {ALPHA}"


def test_30_point_drop_on_10_tasks_x_5_trials_caught_in_80_percent() -> None:
    rng = random.Random(20260106)
    rates = _spread(10, 0.4, 0.9)
    caught = 0
    for _ in range(RUNS):
        base, cand = _draw(rng, rates, [5] * 10, [5] * 10, drop=0.3)
        caught += compare_variant(base, cand, alpha=ALPHA).regressed
    power = caught / RUNS
    print(f"30-point drop, 10 tasks x 5 trials: caught {power:.4f} ({caught}/{RUNS})")
    assert power >= 0.8, f"power {power:.4f} < 0.8"


# --------------------------------------------------------------------------------------------
# Exact p-values


def test_one_task_p_value_is_fishers_one_sided_exact_test() -> None:
    # One task is a 2x2 table: base 4/5, cand 1/5, s = 5 of N = 10. The candidate's passes
    # given s are hypergeometric: P(X <= 1) = (C(5,0)C(5,5) + C(5,1)C(5,4)) / C(10,5)
    # = (1 + 25) / 252.
    r = compare_variant({"a": (4, 5)}, {"a": (1, 5)})
    assert r.p_value == pytest.approx(26 / 252, rel=1e-12)
    assert r.n_tasks == 1
    assert r.diff == pytest.approx(-0.6)
    assert not r.regressed  # 0.103 >= 0.05
    assert r.method == METHOD_EXACT


def test_two_tasks_all_to_nothing() -> None:
    # Each task: s = 3 of N = 6, P(X = 0) = 1 / C(6,3) = 1/20; independent: 1/400.
    r = compare_variant({"a": (3, 3), "b": (3, 3)}, {"a": (0, 3), "b": (0, 3)})
    assert r.p_value == pytest.approx(1 / 400, rel=1e-12)
    assert r.regressed


def test_single_trial_single_task_cannot_regress() -> None:
    r = compare_variant({"a": (1, 1)}, {"a": (0, 1)})
    assert r.p_value == pytest.approx(0.5)
    assert not r.regressed
    assert r.min_detectable_drop is None  # no drop could be detected with 80% power


def _brute_force_p(base: Counts, cand: Counts) -> Fraction:
    """P(total candidate passes <= observed), shuffling each task's trials between the runs
    in every possible way (each equally likely under no change)."""
    per_task: list[list[int]] = []
    for task, (xb, nb) in base.items():
        xc, nc = cand[task]
        outcomes = [1] * (xb + xc) + [0] * (nb + nc - xb - xc)
        per_task.append(
            [
                sum(outcomes[i] for i in chosen)
                for chosen in itertools.combinations(range(nb + nc), nc)
            ]
        )
    observed = sum(cand[t][0] for t in base)
    hits = total = 0
    for combo in itertools.product(*per_task):
        total += 1
        hits += sum(combo) <= observed
    return Fraction(hits, total)


@pytest.mark.parametrize("seed", range(8))
def test_p_value_matches_brute_force_permutations(seed: int) -> None:
    rng = random.Random(seed)
    n_tasks = rng.randint(1, 4)
    base: Counts = {}
    cand: Counts = {}
    for i in range(n_tasks):
        nb, nc = rng.randint(1, 4), rng.randint(1, 4)
        base[f"t{i}"] = (rng.randint(0, nb), nb)
        cand[f"t{i}"] = (rng.randint(0, nc), nc)
    r = compare_variant(base, cand)
    assert r.p_value == pytest.approx(float(_brute_force_p(base, cand)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("base", "cand"),
    [
        ({"a": (0, 3), "b": (1, 3)}, {"a": (3, 3), "b": (2, 3)}),  # upper side: complement
        ({"a": (2, 4), "b": (1, 2)}, {"a": (2, 4), "b": (1, 2)}),  # the middle
        ({"a": (3, 3), "b": (2, 3)}, {"a": (0, 3), "b": (1, 3)}),  # lower side
    ],
)
def test_both_sides_of_the_distribution_match_brute_force(base: Counts, cand: Counts) -> None:
    r = compare_variant(base, cand)
    assert r.p_value == pytest.approx(float(_brute_force_p(base, cand)), rel=1e-12)


def test_normal_approximation_for_huge_inputs_is_close_to_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(5)
    base, cand = _draw(rng, _spread(40, 0.2, 0.8), [6] * 40, [6] * 40, drop=0.1)
    exact = compare_variant(base, cand)
    monkeypatch.setattr(regression, "EXACT_WORK_LIMIT", 0)
    approx = compare_variant(base, cand)
    assert exact.method == METHOD_EXACT
    assert approx.method == METHOD_NORMAL
    assert exact.p_value is not None and approx.p_value is not None
    assert approx.p_value == pytest.approx(exact.p_value, abs=0.01)
    assert approx.diff == exact.diff
    assert approx.min_detectable_drop == exact.min_detectable_drop


# --------------------------------------------------------------------------------------------
# Edge cases


def test_no_common_task() -> None:
    r = compare_variant({"a": (1, 2), "b": (0, 0)}, {"c": (1, 1), "b": (1, 1)})
    assert r == RegressionResult(
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
    )


def test_tasks_without_judged_trials_in_either_run_are_not_paired() -> None:
    r = compare_variant({"a": (2, 3), "b": (0, 0), "c": (1, 1)}, {"a": (1, 3), "b": (2, 2)})
    assert r.n_tasks == 1
    assert r.diff == pytest.approx(-1 / 3)


def test_all_zero() -> None:
    r = compare_variant({t: (0, 5) for t in "abcde"}, {t: (0, 5) for t in "abcde"})
    assert (r.base_rate, r.cand_rate, r.diff, r.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not r.regressed
    assert r.min_detectable_drop is None  # nothing passes: no drop is possible
    assert r.ci_low is not None and r.ci_high is not None
    assert r.ci_low < 0.0 < r.ci_high  # 0/5 is not certainty


def test_all_one() -> None:
    r = compare_variant({t: (5, 5) for t in "abcde"}, {t: (5, 5) for t in "abcde"})
    assert (r.base_rate, r.cand_rate, r.diff, r.p_value) == (1.0, 1.0, 0.0, 1.0)
    assert not r.regressed
    assert r.ci_low is not None and r.ci_high is not None
    assert r.ci_low < 0.0 < r.ci_high
    assert r.min_detectable_drop is not None
    assert 0.0 < r.min_detectable_drop < 1.0


def test_candidate_better_gives_p_near_one() -> None:
    base = {t: (1, 5) for t in "abcdefgh"}
    cand = {t: (4, 5) for t in "abcdefgh"}
    r = compare_variant(base, cand)
    assert r.diff == pytest.approx(0.6)
    assert r.p_value is not None and r.p_value > 0.999
    assert not r.regressed
    assert r.ci_low is not None and r.ci_low > 0.0


def test_clear_drop_regresses_and_interval_excludes_zero() -> None:
    base = {t: (4, 5) for t in "abcdefgh"}
    cand = {t: (1, 5) for t in "abcdefgh"}
    r = compare_variant(base, cand)
    assert r.p_value is not None and r.p_value < 1e-6
    assert r.regressed
    assert r.ci_low is not None and r.ci_high is not None
    assert r.ci_low <= -0.6 <= r.ci_high < 0.0


def test_alpha_decides() -> None:
    base, cand = {"a": (4, 5)}, {"a": (1, 5)}  # p = 26/252 = 0.103
    assert compare_variant(base, cand, alpha=0.2).regressed
    assert not compare_variant(base, cand, alpha=0.1).regressed
    assert compare_variant(base, cand, alpha=0.2).alpha == 0.2


def test_unequal_trial_counts_weigh_tasks_by_nb_nc_over_n() -> None:
    # w_a = 1*5/6, w_b = 4*2/6; rates: base a 1/1, b 2/4; cand a 3/5, b 1/2.
    r = compare_variant({"a": (1, 1), "b": (2, 4)}, {"a": (3, 5), "b": (1, 2)})
    wa, wb = 5 / 6, 8 / 6
    assert r.base_rate == pytest.approx((wa * 1.0 + wb * 0.5) / (wa + wb))
    assert r.cand_rate == pytest.approx((wa * 0.6 + wb * 0.5) / (wa + wb))
    assert r.cand_rate is not None and r.base_rate is not None
    assert r.diff == pytest.approx(r.cand_rate - r.base_rate)
    assert r.p_value == pytest.approx(
        float(_brute_force_p({"a": (1, 1), "b": (2, 4)}, {"a": (3, 5), "b": (1, 2)}))
    )


def test_equal_trial_counts_give_plain_pass_rates() -> None:
    base = {"a": (1, 3), "b": (3, 3), "c": (0, 3)}
    cand = {"a": (2, 2), "b": (1, 2), "c": (0, 2)}
    r = compare_variant(base, cand)
    assert r.base_rate == pytest.approx(4 / 9)
    assert r.cand_rate == pytest.approx(3 / 6)


def test_min_detectable_drop_shrinks_with_more_trials_and_tasks() -> None:
    def mdd(n_tasks: int, trials: int) -> float:
        counts = {f"t{i}": (trials * 2 // 3, trials) for i in range(n_tasks)}
        value = compare_variant(counts, counts).min_detectable_drop
        assert value is not None
        return value

    assert mdd(10, 10) < mdd(10, 5) < mdd(10, 3)
    assert mdd(40, 3) < mdd(20, 3) < mdd(10, 3)
    # 10 tasks x 5 trials at 2/3: about a 25-point drop (the simulations put 80% power there)
    assert 0.15 < mdd(10, 6) < 0.35


def test_min_detectable_drop_is_about_the_80_percent_power_point() -> None:
    """Simulated power at the reported drop (rates 0.4-0.9, 10 tasks x 5 trials): 0.8 within
    the simulation's noise, and a drop half as large is caught far less often."""
    rates = _spread(10, 0.4, 0.9)
    counts = {f"task-{i}": (round(5 * p), 5) for i, p in enumerate(rates)}
    mdd = compare_variant(counts, counts).min_detectable_drop
    assert mdd is not None

    def power(drop: float) -> float:
        rng = random.Random(99)
        runs = 600
        hits = sum(
            compare_variant(*_draw(rng, rates, [5] * 10, [5] * 10, drop=drop)).regressed
            for _ in range(runs)
        )
        return hits / runs

    assert 0.72 <= power(mdd) <= 0.9
    assert power(mdd / 2) < 0.5


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="passes"):
        compare_variant({"a": (3, 2)}, {"a": (1, 2)})
    with pytest.raises(ValueError, match="passes"):
        compare_variant({"a": (1, 2)}, {"a": (-1, 2)})
    with pytest.raises(ValueError, match="alpha"):
        compare_variant({"a": (1, 2)}, {"a": (1, 2)}, alpha=1.0)


def test_to_dict() -> None:
    d = compare_variant({"a": (4, 5)}, {"a": (1, 5)}).to_dict()
    assert set(d) == {
        "n_tasks",
        "base_rate",
        "cand_rate",
        "diff",
        "ci_low",
        "ci_high",
        "p_value",
        "regressed",
        "min_detectable_drop",
        "method",
        "p_two_sided",
        "alpha",
    }
    assert d["p_value"] == pytest.approx(26 / 252)
    assert all(v is None or isinstance(v, (bool, int, float, str)) for v in d.values())
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in d.values())


# --------------------------------------------------------------------------------------------
# compare_runs


def _rows(variant: str, task: str, statuses: str) -> list[dict[str, str]]:
    names = {"p": "passed", "f": "failed", "t": "timeout", "e": "error"}
    return [{"variant": variant, "task": task, "status": names[s]} for s in statuses]


def test_compare_runs_groups_by_variant_and_counts_judged_trials() -> None:
    base_rows = _rows("x", "a", "pppe") + _rows("x", "b", "pf") + _rows("gone", "a", "p")
    cand_rows = _rows("new", "a", "p") + _rows("x", "a", "ftee") + _rows("x", "b", "pp")
    results = compare_runs(base_rows, cand_rows, alpha=0.1)
    assert list(results) == ["new", "x"]
    assert results["new"].n_tasks == 0 and not results["new"].regressed
    assert results["x"] == compare_variant(
        {"a": (3, 3), "b": (1, 2)}, {"a": (0, 2), "b": (2, 2)}, alpha=0.1
    )


def test_compare_runs_reads_sqlite_rows() -> None:
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.execute("create table t (run, variant, task, status)")
    rows = [("b", "v", "a", "passed")] * 3 + [("c", "v", "a", "failed")] * 3
    db.executemany("insert into t values (?, ?, ?, ?)", rows)
    base = db.execute("select * from t where run = 'b'").fetchall()
    cand = db.execute("select * from t where run = 'c'").fetchall()
    r = compare_runs(base, cand)["v"]
    assert r.p_value == pytest.approx(1 / 20)  # s = 3 of 6, all three in the baseline
    assert not r.regressed  # p = 0.05 is not < 0.05


# --------------------------------------------------------------------------------------------
# The regression section: errors, dropped tasks, the family, retries


def _section(
    base: dict[str, dict[str, TaskCounts]],
    cand: dict[str, dict[str, TaskCounts]],
    **kwargs: object,
) -> dict[str, object]:
    names = {v: v.upper() for v in {**base, **cand}}
    return regression_section(base, cand, baseline_run="b1", alpha=ALPHA,
                              variant_names=names, **kwargs)  # type: ignore[arg-type]  # fmt: skip


def _variant(section: dict[str, object], name: str) -> dict[str, object]:
    variants = section["variants"]
    assert isinstance(variants, list)
    return next(v for v in variants if v["variant"] == name)


def test_errors_hide_no_regression() -> None:
    """The issue's case 1: 2 of 6 tasks broken so that every trial is an error. Leaving errors
    out gave "+0.0 pp, no regression detected"; counted as non-passes they fail the gate, and
    the broken tasks, judged in the baseline and not now, fail it on their own."""
    base = {"a": {f"t{i}": TaskCounts(2, 2, 0) for i in range(6)}}
    cand = {"a": {f"t{i}": TaskCounts(2, 2, 0) if i < 4 else TaskCounts(0, 0, 2)
                  for i in range(6)}}  # fmt: skip
    s = _section(base, cand)
    v = _variant(s, "A")
    assert v["tasks_dropped"] == ["t4", "t5"]
    assert v["errors"] == 4 and v["baseline_errors"] == 0
    assert v["tasks_paired"] == 6  # the errors are trials that did not pass
    assert v["diff"] == pytest.approx(-1 / 3)
    assert v["regressed"] is True
    assert any("no judged trial" in r for r in v["reasons"])  # type: ignore[union-attr]
    assert s["regressed"] == ["A"] and s["passed"] is False
    assert s["errors"] == "count"
    # excluded: the errors leave, the dropped tasks are listed, and the output says so
    s = _section(base, cand, errors="exclude")
    v = _variant(s, "A")
    assert (v["tasks_paired"], v["diff"], v["regressed"]) == (4, 0.0, False)
    assert v["tasks_dropped"] == ["t4", "t5"]
    assert s["passed"] is True
    assert any("errors excluded" in n for n in s["notes"])  # type: ignore[union-attr]


def test_errors_count_on_both_sides() -> None:
    # the baseline's errors count as non-passes too: the same error rate is no change
    base = {"a": {f"t{i}": TaskCounts(3, 4, 1) for i in range(5)}}
    cand = {"a": {f"t{i}": TaskCounts(3, 4, 1) for i in range(5)}}
    v = _variant(_section(base, cand), "A")
    assert (v["base_rate"], v["cand_rate"], v["p_value"]) == (0.6, 0.6, pytest.approx(0.6, abs=0.4))
    assert v["regressed"] is False


def test_a_task_not_selected_is_not_dropped() -> None:
    base = {"a": {"t1": TaskCounts(2, 2), "t2": TaskCounts(2, 2)}}
    cand = {"a": {"t1": TaskCounts(2, 2)}}
    v = _variant(_section(base, cand), "A")
    assert v["tasks_dropped"] == ["t2"] and v["regressed"] is True
    v = _variant(_section(base, cand, selected_tasks={"t1"}), "A")
    assert v["tasks_dropped"] == [] and v["tasks_not_selected"] == ["t2"]
    assert v["regressed"] is False and v["tasks_paired"] == 1


def test_holm_over_the_variants_tested() -> None:
    # p-values (one-sided) of three variants: a clear drop, a borderline one, no change
    clear = ({"t": TaskCounts(10, 10)}, {"t": TaskCounts(2, 10)})
    border = ({"t": TaskCounts(10, 10)}, {"t": TaskCounts(6, 10)})
    same = ({"t": TaskCounts(5, 10)}, {"t": TaskCounts(5, 10)})
    base = {"a": clear[0], "b": border[0], "c": same[0]}
    cand = {"a": clear[1], "b": border[1], "c": same[1]}
    s = _section(base, cand)
    raw = {n: _variant(s, n)["p_value"] for n in "ABC"}
    assert raw["B"] < ALPHA  # type: ignore[operator]  # alone, b would regress
    adjusted = {n: _variant(s, n)["p_adjusted"] for n in "ABC"}
    ordered = sorted(raw, key=lambda n: raw[n])  # type: ignore[arg-type, return-value]
    assert ordered == ["A", "B", "C"]
    assert adjusted["A"] == pytest.approx(3 * raw["A"])  # type: ignore[operator]
    assert adjusted["B"] == pytest.approx(max(3 * raw["A"], 2 * raw["B"]))  # type: ignore[operator]
    assert adjusted["C"] == pytest.approx(min(1.0, max(adjusted["B"], raw["C"])))  # type: ignore[type-var, arg-type]
    assert s["regressed"] == ["A"]
    assert s["variants_tested"] == 3 and s["family"] == "Holm"
    # tested alone, b regresses
    assert _section({"b": border[0]}, {"b": border[1]})["regressed"] == ["B"]


def test_retry_policies_that_differ_are_named() -> None:
    base = {"a": {"t": TaskCounts(5, 10)}}
    cand = {"a": {"t": TaskCounts(5, 10)}}
    s = _section(base, cand, base_rerun_judged=0, cand_rerun_judged=3)
    assert s["retry_mismatch"] is True
    (note,) = s["notes"]  # type: ignore[misc]
    assert "this run ran 3 judged trial(s) again" in note
    assert _section(base, cand, base_rerun_judged=2, cand_rerun_judged=3)["retry_mismatch"] is False
    assert _section(base, cand)["retry_mismatch"] is False  # unknown: no claim
    assert "the baseline run ran 4" in (retry_note(4, 0) or "")


def test_two_sided_p_is_twice_the_smaller_tail() -> None:
    res = compare_variant({"t": (10, 10)}, {"t": (5, 10)})
    assert res.p_two_sided == pytest.approx(2 * res.p_value)  # type: ignore[operator]
    better = compare_variant({"t": (5, 10)}, {"t": (10, 10)})
    assert better.p_two_sided == pytest.approx(res.p_two_sided)
    assert better.p_value == pytest.approx(1.0)
