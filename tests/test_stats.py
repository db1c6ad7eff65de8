"""pytest_evalrun.report.stats against reference values typed in.

Every expected number below is either derived in a comment from a closed form or was computed
once, offline, with scipy 1.17.1 (``scipy.stats.binomtest(k, n).proportion_ci(c, "wilson")``,
``scipy.stats.t.cdf`` / ``t.ppf``, ``scipy.stats.ttest_rel``, ``scipy.stats.binomtest``) and
typed in; scipy is not needed to run these tests.
"""

from __future__ import annotations

import math

import pytest

from pytest_evalrun.report.stats import (
    pass_at_k,
    t_cdf,
    t_ppf,
    wilson_interval,
)

# z = Phi^-1(0.975), the 95% two-sided normal quantile (scipy.stats.norm.ppf(0.975)).
Z975 = 1.959963984540054
Z2 = Z975 * Z975  # 3.841458820694124


# -------------------------------------------------------------------------------- Wilson


def test_wilson_7_of_10() -> None:
    # p = 0.7, n = 10, z^2/n = 0.38414588; denom = 1.38414588
    # centre = (0.7 + 0.19207294) / 1.38414588 = 0.64449314
    # half   = (1.95996398 / 1.38414588) * sqrt(0.7*0.3/10 + z^2/400)
    #        = 1.41600633 * sqrt(0.03060365) = 0.24771522
    # -> (0.39677815, 0.89220873)
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(0.39677814746114537, abs=1e-12)
    assert hi == pytest.approx(0.8922087325936989, abs=1e-12)


def test_wilson_half() -> None:
    # p = 0.5, n = 100: centre is exactly 0.5; half = z/(1+z^2/100) * sqrt(0.0025 + z^2/40000)
    # = 1.88746... * 0.0509508... = 0.09616847 -> (0.40383153, 0.59616847)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038315303659956, abs=1e-12)
    assert hi == pytest.approx(0.5961684696340044, abs=1e-12)
    assert lo + hi == pytest.approx(1.0, abs=1e-15)


def test_wilson_extremes_closed_form() -> None:
    # k = 0: lower bound 0, upper bound z^2 / (n + z^2) = 3.84145882 / 8.84145882 = 0.43448246
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0
    assert hi == pytest.approx(Z2 / (5 + Z2), abs=1e-14)
    assert wilson_interval(0, 5)[1] == pytest.approx(0.43448246478317476, abs=1e-12)
    # k = n: lower bound n / (n + z^2) = 5 / 8.84145882 = 0.56551754, upper bound 1
    lo, hi = wilson_interval(5, 5)
    assert lo == pytest.approx(5 / (5 + Z2), abs=1e-14)
    assert hi == 1.0
    assert wilson_interval(5, 5)[0] == pytest.approx(0.5655175352168252, abs=1e-12)


def test_wilson_empty_and_other_confidence() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # 90%: z = 1.6448536269514722, k = 0, n = 10 -> hi = z^2 / (10 + z^2) = 0.21291...
    z = 1.6448536269514722
    assert wilson_interval(0, 10, confidence=0.9)[1] == pytest.approx(z * z / (10 + z * z))


# scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
WILSON_SCIPY = [
    (1, 3, 0.95, 0.06149194472039626, 0.7923403991979523),
    (4, 8, 0.95, 0.21521606221387757, 0.7847839377861224),
    (10, 12, 0.95, 0.5519691377470266, 0.953034857816146),
    (3, 1000, 0.95, 0.0010207838811386186, 0.008783014053503173),
    (0, 10, 0.90, 0.0, 0.21294197008340698),
    (17, 40, 0.99, 0.24890358835262438, 0.6224373936735133),
]


@pytest.mark.parametrize(("k", "n", "confidence", "low", "high"), WILSON_SCIPY)
def test_wilson_matches_scipy(k: int, n: int, confidence: float, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n, confidence=confidence)
    assert lo == pytest.approx(low, rel=1e-13, abs=1e-15)
    assert hi == pytest.approx(high, rel=1e-13)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5])
def test_wilson_rejects_bad_confidence(confidence: float) -> None:
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=confidence)


@pytest.mark.parametrize(("k", "n"), [(-1, 3), (4, 3), (0, -1)])
def test_wilson_rejects_bad_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n)


# -------------------------------------------------------------------------------- pass@k


def test_pass_at_k_known_values() -> None:
    # 1 - C(7,5)/C(10,5) = 1 - 21/252 = 11/12
    assert pass_at_k(10, 3, 5) == pytest.approx(11 / 12, abs=1e-15)
    # 1 - C(4,2)/C(5,2) = 1 - 6/10 = 0.4
    assert pass_at_k(5, 1, 2) == pytest.approx(0.4, abs=1e-15)
    # 1 - C(2,2)/C(4,2) = 1 - 1/6 = 5/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6, abs=1e-15)
    # 1 - C(97,10)/C(100,10) = 1 - (90*89*88)/(100*99*98) = 1 - 704880/970200 = 0.27346938...
    assert pass_at_k(100, 3, 10) == pytest.approx(1 - 704880 / 970200, abs=1e-15)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(3, 0, 3) == 0.0
    assert pass_at_k(3, 1, 3) == 1.0  # n - c < k: every draw of 3 contains the pass
    assert pass_at_k(3, 3, 1) == 1.0
    # pass@1 is exactly c / n
    assert pass_at_k(3, 2, 1) == 2 / 3
    assert pass_at_k(10, 3, 1) == 0.3


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# -------------------------------------------------------------------------------- beta and t


def test_t_cdf_closed_forms() -> None:
    for t in (-30.0, -2.5, -0.1, 0.0, 0.4, 1.0, 3.0, 50.0):
        # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-12)
        # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-12)


def test_t_cdf_small_tail_is_accurate() -> None:
    # df = 2 lower tail at t = -1000: 1/2 - 1000/(2 sqrt(1000002))
    # = 1 / (sqrt(1000002) (sqrt(1000002) + 1000)) = 4.99999250...e-7 (the stable form);
    # computed without cancellation it keeps its relative precision.
    s = math.sqrt(1_000_002)
    exact = 1 / (s * (s + 1000))
    assert t_cdf(-1000.0, 2) == pytest.approx(exact, rel=1e-10)
    # Large df approaches the normal: t_cdf(1.96, 1e6) ~ Phi(1.96) = 0.9750021048517795
    assert t_cdf(1.96, 1_000_000) == pytest.approx(0.9750021048517795, abs=1e-6)


# scipy.stats.t.cdf(t, df)
T_CDF_SCIPY = [
    (3, -4.0, 0.014004228005073076),
    (3, 0.3, 0.6081183539800405),
    (3, 6.0, 0.9953636425538577),
    (4, -1.5, 0.104),
    (4, 2.0, 0.9419417382415922),
    (7, -4.0, 0.0025949566746484064),
    (7, 0.3, 0.6135549747989328),
    (9, -1.5, 0.08392532802853753),
    (9, 6.0, 0.9998987503389661),
    (30, -4.0, 0.0001909228180418782),
    (30, 2.0, 0.9726874775185085),
    (200, -4.0, 4.456547609296721e-05),
    (200, 0.3, 0.617755634905336),
    (200, 6.0, 0.9999999954424398),
    (5, -60.0, 1.2168188794991902e-08),
]


@pytest.mark.parametrize(("df", "t", "expected"), T_CDF_SCIPY)
def test_t_cdf_matches_scipy(df: int, t: float, expected: float) -> None:
    assert t_cdf(t, df) == pytest.approx(expected, rel=1e-11)


# scipy.stats.t.ppf(q, df)
T_PPF_SCIPY = [
    (3, 0.9, 1.637744353696209),
    (3, 0.975, 3.1824463052837078),
    (3, 0.995, 5.840909309733355),
    (3, 0.001, -10.214531852407385),
    (7, 0.975, 2.364624251592784),
    (7, 0.001, -4.785289628638334),
    (30, 0.9, 1.3104150253913955),
    (30, 0.995, 2.7499956535672254),
    (2.5, 0.975, 3.5746548420036817),
]


@pytest.mark.parametrize(("df", "q", "expected"), T_PPF_SCIPY)
def test_t_ppf_matches_scipy(df: float, q: float, expected: float) -> None:
    assert t_ppf(q, df) == pytest.approx(expected, rel=1e-11)


def test_t_ppf_closed_forms() -> None:
    # df = 1: t_q = tan(pi (q - 1/2)); q = 0.975 -> tan(0.475 pi) = 12.706204736174698
    assert t_ppf(0.975, 1) == pytest.approx(12.706204736174698, rel=1e-12)
    # df = 2: t_q^2 = 2a^2 / (1 - a^2), a = 2q - 1; q = 0.975 -> sqrt(1.805/0.0975) = 4.30265273
    assert t_ppf(0.975, 2) == pytest.approx(4.302652729749464, rel=1e-12)
    assert t_ppf(0.025, 2) == pytest.approx(-4.302652729749464, rel=1e-12)
    # Table values: t_{0.975, 4} = 2.7764451051977987, t_{0.975, 9} = 2.2621571627982044
    assert t_ppf(0.975, 4) == pytest.approx(2.7764451051977987, rel=1e-11)
    assert t_ppf(0.975, 9) == pytest.approx(2.2621571627982044, rel=1e-11)
    assert t_ppf(0.5, 3) == 0.0
    for q in (1e-6, 0.3, 0.6, 0.9, 0.999):
        assert t_cdf(t_ppf(q, 5), 5) == pytest.approx(q, rel=1e-11)


def test_t_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError):
        t_ppf(1.0, 3)
    with pytest.raises(ValueError):
        t_ppf(0.5, -1)


# --------------------------------------------------------------------------------------------
# The exact binomial test and bound (cell gates), Holm, the clustered interval


def test_binom_cdf_exact_values() -> None:
    from pytest_evalrun.report.stats import binom_cdf

    assert binom_cdf(0, 3, 0.5) == pytest.approx(0.125, rel=1e-14)
    assert binom_cdf(3, 10, 0.5) == pytest.approx(176 / 1024, rel=1e-14)
    assert binom_cdf(1, 2, 0.6) == pytest.approx(1 - 0.36, rel=1e-14)
    assert (binom_cdf(-1, 5, 0.3), binom_cdf(5, 5, 0.3)) == (0.0, 1.0)
    assert (binom_cdf(2, 5, 0.0), binom_cdf(2, 5, 1.0)) == (1.0, 0.0)
    with pytest.raises(ValueError):
        binom_cdf(1, 5, 1.5)


def test_binom_upper_bound_is_clopper_pearson() -> None:
    from pytest_evalrun.report.stats import binom_cdf, binom_upper_bound

    # 0 of n: the bound solves (1 - U)^n = alpha
    for n in (1, 3, 10):
        assert binom_upper_bound(0, n, 0.05) == pytest.approx(1 - 0.05 ** (1 / n), abs=1e-12)
    # 3 of 10 at 97.5% one-sided: scipy.stats.beta.ppf(0.975, 4, 7) = 0.6524528500599972
    assert binom_upper_bound(3, 10, 0.025) == pytest.approx(0.6524528500599972, abs=1e-10)
    assert binom_upper_bound(4, 4, 0.05) == 1.0
    # the bound lies below a threshold exactly when the exact test rejects "rate >= threshold"
    for k, n, t in ((0, 10, 0.5), (2, 10, 0.6), (3, 10, 0.6), (1, 3, 0.9)):
        assert (binom_upper_bound(k, n, 0.05) < t) == (binom_cdf(k, n, t) < 0.05)


def test_holm_step_down() -> None:
    from pytest_evalrun.report.stats import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([]) == []
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_clustered_interval_edges() -> None:
    from pytest_evalrun.report.stats import clustered_interval, t_ppf

    assert clustered_interval([]) is None
    assert clustered_interval([(2, 4)]) == (0.5, (0.0, 1.0))  # one task: nothing about tasks
    assert clustered_interval([(3, 3), (0, 0)]) == (1.0, (0.0, 1.0))  # a task with no trial
    # every task at the same rate: no between-task spread, a Wilson interval with t(tasks - 1)
    same = clustered_interval([(2, 4)] * 5)
    assert same is not None
    rate, (lo, hi) = same
    q = t_ppf(0.975, 4)
    n = 20
    centre = (0.5 + q * q / (2 * n)) / (1 + q * q / n)
    half = q / (1 + q * q / n) * math.sqrt(0.25 / n + q * q / (4 * n * n))
    assert (rate, lo, hi) == (0.5, pytest.approx(centre - half), pytest.approx(centre + half))
    # spread between tasks widens it beyond Wilson on the same trials
    spread = clustered_interval([(4, 4), (0, 4), (4, 4), (0, 4), (2, 4)])
    assert spread is not None
    lo2, hi2 = spread[1]
    assert hi2 - lo2 > hi - lo
    zero = clustered_interval([(0, 3)] * 4)
    assert zero is not None and zero[0] == 0.0 and zero[1][0] == 0.0 < zero[1][1] < 1.0
    with pytest.raises(ValueError):
        clustered_interval([(5, 4), (1, 4)])
