"""promptlab.reports.stats: known values, agreement with scipy, properties, and the reports end to end."""

from __future__ import annotations

import csv
import itertools
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CliResult, Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.special import comb

from promptlab.reports import stats
from promptlab.reports.stats import Comparison, intervals, significance

Cli = Callable[..., CliResult]
Z = 1.959963984540054  # z_{0.975}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- Wilson -------------------------------------------------------------------------------------


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def test_wilson_8_of_10_by_hand() -> None:
    lo, hi = stats.wilson(8, 10) or (0, 0)
    assert (lo, hi) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    assert (lo, hi) == pytest.approx(wilson_by_hand(8, 10), abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (1, 3), (37, 50), (500, 1000)])
def test_wilson_agrees_with_the_formula_and_scipy(k: int, n: int) -> None:
    got = stats.wilson(k, n)
    assert got is not None
    assert got == pytest.approx(wilson_by_hand(k, n), abs=1e-12)
    ci = sps.binomtest(k, n).proportion_ci(method="wilson")
    assert got == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_of_nothing_is_none() -> None:
    assert stats.wilson(0, 0) is None


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_matches_scipy_bca_with_the_same_seed() -> None:
    values = [0.1, 0.4, 0.35, 0.8, 0.9, 0.2, 0.55, 0.6, 0.05, 0.7]
    res = sps.bootstrap(
        (np.array(values),),
        np.mean,
        n_resamples=stats.N_BOOTSTRAP,
        method="BCa",
        random_state=np.random.default_rng(stats.SEED),
    )
    assert stats.bootstrap_mean(values) == pytest.approx(
        (res.confidence_interval.low, res.confidence_interval.high)
    )


def test_bootstrap_degenerate_inputs() -> None:
    assert stats.bootstrap_mean([]) is None
    assert stats.bootstrap_mean([0.7]) is None
    assert stats.bootstrap_mean([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert stats.bootstrap_mean([1, 1, 1, 1, 1, 1, 1, 1, 1, 0]) is not None  # BCa or percentile
    assert stats.bootstrap_mean([1.0, 2.0]) == stats.bootstrap_mean([1.0, 2.0])  # fixed seed


samples = st.lists(
    st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False),
    min_size=2,
    max_size=40,
)
bounded = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@bounded
@given(samples)
def test_bootstrap_interval_contains_the_sample_mean(values: list[float]) -> None:
    ci = stats.bootstrap_mean(values)
    assert ci is not None
    mean = float(np.mean(values))
    slack = 1e-9 * (1 + abs(mean))
    assert ci[0] - slack <= mean <= ci[1] + slack


@bounded
@given(samples.filter(lambda v: max(v) - min(v) > 1e-3))
def test_bootstrap_interval_narrows_with_more_tests(values: list[float]) -> None:
    small = stats.bootstrap_mean(values)
    large = stats.bootstrap_mean(values * 16)  # the same data, 16 times as many tests
    assert small is not None and large is not None
    width_small, width_large = small[1] - small[0], large[1] - large[0]
    assert width_large < width_small
    assert width_large <= 0.6 * width_small  # about a quarter: width ~ 1/sqrt(n)


# --- repeats ------------------------------------------------------------------------------------


def pass_at_k_by_enumeration(n: int, c: int, k: int) -> tuple[float, float]:
    """Share of k-subsets of the n repeats with at least one pass / with only passes."""
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    return (
        sum(any(s) for s in subsets) / len(subsets),
        sum(all(s) for s in subsets) / len(subsets),
    )


def test_pass_at_k_hand_cases() -> None:
    assert stats.pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert stats.pass_at_k(5, 1, 5) == 1.0
    assert stats.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert stats.pass_at_k(3, 0, 3) == 0.0
    assert stats.pass_pow_k(5, 4, 2) == pytest.approx(6 / 10)
    assert stats.pass_pow_k(3, 3, 3) == 1.0
    assert stats.pass_pow_k(3, 2, 3) == 0.0
    assert stats.pass_pow_k(4, 2, 1) == pytest.approx(0.5)  # k = 1: the pass rate
    with pytest.raises(ValueError):
        stats.pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        stats.pass_pow_k(3, 1, 4)


@pytest.mark.parametrize(
    ("n", "c", "k"), [(n, c, k) for n in (1, 3, 6) for c in range(n + 1) for k in range(1, n + 1)]
)
def test_pass_at_k_matches_enumeration_and_scipy_comb(n: int, c: int, k: int) -> None:
    at, pw = pass_at_k_by_enumeration(n, c, k)
    assert stats.pass_at_k(n, c, k) == pytest.approx(at)
    assert stats.pass_pow_k(n, c, k) == pytest.approx(pw)
    assert stats.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_repeat_stats() -> None:
    r = stats.repeat_stats([[True, False, True], [True, True, True], [False, False, False]])
    assert r is not None
    assert r.k == 3
    assert r.flake_rate == pytest.approx(1 / 3)
    assert r.pass_at_k == pytest.approx(2 / 3)
    assert r.pass_pow_k == pytest.approx(1 / 3)
    r1 = stats.repeat_stats([[True, False, True], [True, True, True]], k=1)
    assert r1 is not None and r1.pass_at_k == pytest.approx(r1.pass_pow_k) == pytest.approx(5 / 6)
    assert stats.repeat_stats([[True], [False]]) is None  # no repeats, nothing to say


# --- paired tests -------------------------------------------------------------------------------


def discordant(
    a_only: int, b_only: int, both: int = 5, neither: int = 5
) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_mcnemar_exact_1_vs_9_by_hand() -> None:
    a, b = discordant(1, 9)
    c = stats.paired(a, b, labels=("zero_shot", "few_shot"))
    assert c.method == "mcnemar-exact"
    assert (c.a_only, c.b_only, c.n_tests) == (1, 9, 20)
    assert c.p_value == pytest.approx(2 * sps.binom.cdf(1, 10, 0.5))
    assert c.p_value == pytest.approx(0.021484375)  # 22 / 1024
    assert c.p_value == pytest.approx(sps.binomtest(1, 10, 0.5).pvalue)
    assert c.diff == pytest.approx(40.0)  # (9 - 1) / 20 tests, in points
    assert c.diff_lo is not None and c.diff_hi is not None
    assert c.diff_lo < 40 < c.diff_hi
    assert (c.a_pass_rate, c.b_pass_rate) == (0.3, 0.7)


def test_newcombe_without_correlation_is_statsmodels_newcombe() -> None:
    # both * neither - a_only * b_only = 1 lies in [0, n/2], so Newcombe's shrunk correlation is
    # 0 and the paired interval is the square-and-add interval statsmodels computes.
    from statsmodels.stats.proportion import confint_proportions_2indep

    both, a_only, b_only, neither = 3, 2, 4, 3
    n = both + a_only + b_only + neither
    expected = confint_proportions_2indep(
        both + b_only, n, both + a_only, n, method="newcomb", compare="diff"
    )
    assert stats.newcombe_paired(both, a_only, b_only, neither) == pytest.approx(expected)


def test_newcombe_agrees_with_mcnemar_on_small_samples() -> None:
    # 3 of 8 better, none worse: McNemar p=0.25, so the interval must contain 0.
    lo, hi = stats.newcombe_paired(2, 0, 3, 3) or (0, 0)
    assert lo < 0 < hi and hi > 0.375
    # 9 better, 1 worse of 20: McNemar p=0.021, so it must not.
    lo, hi = stats.newcombe_paired(5, 1, 9, 5) or (0, 0)
    assert 0 < lo < 0.4 < hi
    # Same pass rates (50% each), but outcomes that agree on most tests: pairing narrows it.
    wide = stats.newcombe_paired(5, 5, 5, 5)
    narrow = stats.newcombe_paired(8, 2, 2, 8)
    assert wide is not None and narrow is not None
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert stats.newcombe_paired(0, 0, 0, 0) is None


def test_verdict_says_when_holm_removes_significance() -> None:
    a, b = discordant(0, 7, both=5, neither=8)  # alone: p = 2/2^7 = 0.016
    comparisons = [stats.paired(a, b, labels=("a", "b"))] + [
        stats.paired(*discordant(1, 1), labels=(f"x{i}", f"y{i}")) for i in range(4)
    ]
    stats.holm(comparisons)
    c = comparisons[0]
    assert c.p_holm == pytest.approx(5 * 2 / 2**7)
    assert not c.significant
    assert c.diff_lo is not None and c.diff_lo > 0
    assert "after Holm correction over 5 comparisons, not significant (p=0.016 alone)" in c.verdict


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 5), (0, 6), (3, 3), (2, 12), (0, 0), (7, 1)])
def test_mcnemar_agrees_with_scipy_binomtest(a_only: int, b_only: int) -> None:
    a, b = discordant(a_only, b_only)
    c = stats.paired(a, b)
    expected = 1.0 if a_only + b_only == 0 else sps.binomtest(a_only, a_only + b_only).pvalue
    assert c.p_value == pytest.approx(expected, rel=1e-3)


def test_sign_flip_permutation_of_0_1_outcomes_is_exact_mcnemar() -> None:
    assert stats.permutation_p([1.0] * 9 + [-1.0] + [0.0] * 10) == pytest.approx(22 / 1024)


def test_permutation_p_agrees_with_scipy_two_sample_form() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(9), rng.random(9) + 0.3
    res = sps.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(y - x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=10_000,  # more than 2^9: scipy enumerates every pairing exactly
    )
    assert stats.permutation_p(b - a) == pytest.approx(res.pvalue)
    assert stats.permutation_p(np.zeros(5)) == 1.0
    assert stats.permutation_p([0.0, 0.0, 0.3]) == 1.0  # a single non-zero difference
    assert stats.permutation_p([]) == 1.0


def test_repeats_use_a_permutation_test_on_per_test_pass_rates() -> None:
    a = [[True, False, False]] * 8
    b = [[True, True, True]] * 8
    c = stats.paired(a, b, labels=("a", "b"))
    assert c.method == "permutation"
    assert c.diff == pytest.approx(200 / 3, abs=0.01)
    assert c.p_value == pytest.approx(2 / 2**8)  # exact: every sign flip enumerated
    assert c.significant


def test_scores_get_their_own_paired_test() -> None:
    a, b = discordant(0, 0, both=10, neither=0)  # same pass/fail
    a_scores = [0.5 + 0.01 * i for i in range(10)]
    b_scores = [s + 0.2 for s in a_scores]
    c = stats.paired(a, b, a_scores, b_scores, ("a", "b"))
    assert c.p_value == 1.0
    assert c.score_diff == pytest.approx(0.2)
    assert c.score_diff_lo == pytest.approx(0.2) == c.score_diff_hi  # constant differences
    assert c.score_p_value == pytest.approx(2 / 2**10)
    assert c.verdict.startswith("b vs a: no difference, same results on all 10 tests")
    assert "but b scores higher by 0.20" in c.verdict


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        stats.paired([True], [True, False])
    with pytest.raises(ValueError):
        stats.paired([True], [False], [1.0, 2.0], [1.0])


# --- Holm, power, verdicts ----------------------------------------------------------------------


def test_holm_on_a_known_vector() -> None:
    raw = [0.01, 0.04, 0.03, 0.005]
    comparisons = [
        Comparison("a", f"b{i}", 50, diff=5.0, p_value=p, score_p_value=0.5)
        for i, p in enumerate(raw)
    ]
    stats.holm(comparisons)
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert [c.p_holm for c in comparisons] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [c.significant for c in comparisons] == [True, False, False, True]
    # The score family is adjusted on its own: four p-values of 0.5 stay 1.0 after Holm.
    assert [c.score_p_holm for c in comparisons] == [1.0] * 4


def test_tests_needed_connor_formula_by_hand() -> None:
    za, zb = Z, 0.8416212335729143
    by_hand = (za * math.sqrt(0.2) + zb * math.sqrt(0.2 - 0.01)) ** 2 / 0.01  # 154.6
    assert stats.tests_needed(0, 0.2) == math.ceil(by_hand) == 155
    assert stats.tests_needed(100, 0.2) == 55
    assert stats.tests_needed(10_000, 0.2) == 0  # never negative
    # No discordance observed: psi is floored at delta (a 10-point gap needs 10% discordant).
    floor = (za * math.sqrt(0.1) + zb * math.sqrt(0.1 - 0.01)) ** 2 / 0.01
    assert stats.tests_needed(0, 0.0) == math.ceil(floor) == 77
    assert stats.tests_needed(20, 0.0, detect_points=20) < stats.tests_needed(20, 0.0)


def test_verdict_significant() -> None:
    a, b = discordant(1, 9)
    c = stats.paired(a, b, labels=("zero_shot", "few_shot"))
    assert c.significant
    assert c.tests_needed is None
    assert c.verdict == "few_shot beats zero_shot by +40 points [10, 61], p=0.02"
    # The other way round, the winner is still named with a positive difference.
    flipped = stats.paired(b, a, labels=("few_shot", "zero_shot"))
    assert flipped.diff == -40.0
    assert flipped.verdict == "few_shot beats zero_shot by +40 points [10, 61], p=0.02"


def test_verdict_not_significant_says_how_many_tests_are_missing() -> None:
    a, b = discordant(3, 5, both=10, neither=12)  # 30 tests, 8 discordant
    c = stats.paired(a, b, labels=("plain", "chat"))
    assert not c.significant
    needed = stats.tests_needed(30, 8 / 30)
    assert c.tests_needed == needed > 0
    assert c.verdict.startswith("chat vs plain: no detectable difference (+7 points [")
    assert c.verdict.endswith(
        f"p=0.73): about {needed} more tests would be needed to detect 10 points"
    )


def test_verdict_identical_variants() -> None:
    a, _ = discordant(0, 0, both=12, neither=8)
    c = stats.paired(a, a, [1.0] * 20, [1.0] * 20, ("a", "b"))
    assert (c.diff, c.p_value, c.score_p_value) == (0, 1.0, 1.0)
    # Identical on 20 tests still cannot rule out a real difference of several points.
    assert c.diff_lo is not None and c.diff_hi is not None
    assert c.diff_lo < -5 and c.diff_hi > 5
    assert c.verdict == (
        "b vs a: no difference, same results on all 20 tests; "
        "about 57 more tests would be needed to detect 10 points"
    )


def test_verdict_with_too_few_tests_and_with_none() -> None:
    c = stats.paired([True, True], [False, False], labels=("a", "b"))
    assert c.p_value == 0.5
    assert c.verdict.startswith("b vs a: too few tests to tell (-100 points [-100, -"), c.verdict
    assert ", p=0.50)" in c.verdict
    one = stats.paired([True], [False], labels=("a", "b"))
    assert (one.diff_lo, one.diff_hi) == (None, None)  # no interval from one test
    assert one.verdict.startswith("b vs a: too few tests to tell (-100 points, p=1.00)")
    none = stats.paired([], [], labels=("a", "b"))
    assert none.verdict == "b vs a: no shared tests to compare"
    assert none.as_dict()["p_value"] is None


def test_enough_tests_and_still_no_difference() -> None:
    a, b = discordant(20, 22, both=300, neither=300)
    c = stats.paired(a, b, labels=("a", "b"))
    assert c.tests_needed == 0
    assert c.verdict.endswith("642 tests would likely have shown 10 points, so any gap is smaller")


# --- whole runs ---------------------------------------------------------------------------------


def rows_for(
    table: dict[tuple[str, str, str], list[bool | list[bool]]],
) -> list[dict[str, Any]]:
    rows = []
    for (model, prompt, setting), outcomes in table.items():
        for i, o in enumerate(outcomes):
            for ok in o if isinstance(o, list) else [o]:
                rows.append(
                    {
                        "model": model,
                        "prompt": prompt,
                        "setting": setting,
                        "test_index": i,
                        "status": "pass" if ok else "fail",
                        "score": float(ok),
                    }
                )
    return rows


def test_compare_run_covers_prompts_models_and_settings() -> None:
    good, bad = [True] * 12, [False] * 2 + [True] * 10
    table: dict[tuple[str, str, str], list[bool | list[bool]]] = {}
    for m in ("m1", "m2"):
        for p in ("p1", "p2"):
            for s in ("temperature=0", "temperature=1"):
                table[(m, p, s)] = list(good if p == "p2" else bad)
    table[("m1", "p1", "temperature=0")] = list(bad[:-1])  # one test missing: unpaired
    comparisons = stats.compare_run(rows_for(table))
    assert len(comparisons) == 12  # 4 groups in each of 3 dimensions, one pair each
    assert all(list(c) == list(stats.COMPARISON_COLUMNS) for c in comparisons)
    by_dim = {
        d: [c for c in comparisons if c["dimension"] == d] for d in ("prompt", "model", "setting")
    }
    assert all(len(v) == 4 for v in by_dim.values())
    first = by_dim["prompt"][0]
    assert (first["a"], first["b"], first["group"]) == (
        "p1",
        "p2",
        "model: m1 · setting: temperature=0",
    )
    assert (first["n_tests"], first["unpaired"]) == (11, 1)
    assert by_dim["model"][0]["group"] == "prompt: p1 · setting: temperature=0"
    assert by_dim["setting"][0]["group"] == "model: m1 · prompt: p1"
    assert by_dim["setting"][0]["a"] == "temperature=0"
    # Holm across all 12: the raw p of 0.5 for 2 discordant tests only grows.
    assert all(c["p_holm"] >= c["p_value"] for c in comparisons)
    for c in comparisons:
        assert all(not isinstance(v, (np.generic, np.ndarray)) for v in c.values())


def test_errors_count_as_fails_with_score_zero() -> None:
    rows = rows_for({("m", "a", ""): [True] * 8, ("m", "b", ""): [True] * 8})
    for row in rows[8:]:
        row.update(status="error", score=None)
    (c,) = stats.compare_run(rows)
    assert (c["b_pass_rate"], c["score_diff"], c["a_only"]) == (0.0, -1.0, 8)
    assert c["verdict"].startswith("a beats b by +100 points")


def test_variant_stats_repeats_and_rank() -> None:
    table: dict[tuple[str, str, str], list[bool | list[bool]]] = {
        ("m", "flaky", ""): [[True, False, True], [True, True, True], [False, False, False]],
        ("m", "steady", ""): [[True] * 3] * 3,
        ("m", "single", ""): [True, False, True],
    }
    flaky, steady, single = stats.variant_stats(rows_for(table))
    assert (flaky["tests"], flaky["repeats"], flaky["cells"], flaky["k"]) == (3, 3, 9, 3)
    assert flaky["flake_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert flaky["pass_at_k"] == pytest.approx(2 / 3, abs=1e-4)
    assert flaky["pass_pow_k"] == pytest.approx(1 / 3, abs=1e-4)
    assert (steady["flake_rate"], steady["pass_at_k"], steady["pass_pow_k"]) == (0, 1, 1)
    assert single["k"] is single["flake_rate"] is single["pass_at_k"] is None
    assert (steady["rank"], single["rank"], flaky["rank"]) == (1, 2, 3)
    lo, hi = stats.wilson(5, 9) or (0, 0)
    assert (flaky["pass_rate_lo"], flaky["pass_rate_hi"]) == (round(lo, 4), round(hi, 4))


def test_stats_is_not_imported_for_help() -> None:
    code = "import sys, promptlab.cli; print(sorted({'scipy', 'statsmodels'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- end to end on the fake backend -------------------------------------------------------------


def suite_text(extra: str = "", n: int = 20) -> str:
    # echo returns the prompt: few_shot's template always holds "good", zero_shot's only when
    # the test's own variable does (2 of n tests), polite never more than zero_shot.
    tests = "\n".join(
        f"  - description: t{i}\n    vars: {{q: {'good' if i < 2 else 'item'}{i}}}"
        for i in range(n)
    )
    return f"""
description: stats
prompts:
  - raw: "answer for {{{{ q }}}}"
    label: zero_shot
  - raw: "good answer for {{{{ q }}}}"
    label: few_shot
  - raw: "answer {{{{ q }}}} please"
    label: polite
models:
  - path: fake://echo
    label: echo
    n_ctx: 256
params:
  max_tokens: 32
{extra}
defaultTest:
  assert:
    - type: icontains
      value: good
tests:
{tests}
"""


def test_run_writes_significant_verdict_and_intervals(project: Project, cli: Cli) -> None:
    path = project.write("evals/s.yaml", suite_text())
    out = project.root / "out"
    r = cli("run", path, "-o", out)
    assert r.code == 100, r.err
    summary = {s["prompt"]: s for s in read_csv(out / "summary.csv")}
    for s in summary.values():
        lo, rate, hi = float(s["pass_rate_lo"]), float(s["pass_rate"]), float(s["pass_rate_hi"])
        assert 0 <= lo <= rate <= hi <= 1
        assert float(s["mean_score_lo"]) <= float(s["mean_score"]) <= float(s["mean_score_hi"])
        assert (s["tests"], s["repeats"]) == ("20", "1")
        assert s["flake_rate"] == s["pass_at_k"] == s["pass_pow_k"] == s["k"] == ""
    assert summary["few_shot"]["rank"] == "1"
    assert summary["zero_shot"]["rank"] == summary["polite"]["rank"] == "2"
    assert (summary["zero_shot"]["pass_rate_lo"], summary["zero_shot"]["pass_rate_hi"]) == (
        "0.0279",
        "0.301",
    )

    comparisons = read_csv(out / "comparisons.csv")
    assert list(comparisons[0]) == list(stats.COMPARISON_COLUMNS)
    pair = {(c["a"], c["b"]): c for c in comparisons}
    win = pair[("zero_shot", "few_shot")]
    assert win["significant"] == "True"
    assert win["method"] == "mcnemar-exact"
    assert (win["a_only"], win["b_only"], win["n_tests"], win["unpaired"]) == ("0", "18", "20", "0")
    assert win["verdict"] == "few_shot beats zero_shot by +90 points [64, 97], p<0.001"
    assert float(win["p_holm"]) == pytest.approx(3 * 2 / 2**18, rel=1e-3)  # Holm over 3 pairs
    same = pair[("zero_shot", "polite")]
    assert same["significant"] == "False"
    assert same["verdict"].startswith("polite vs zero_shot: no difference")
    assert int(same["tests_needed"]) == 57

    assert "Verdicts" in r.out
    assert "few_shot beats zero_shot by +90 points [64, 97], p<0.001" in r.out
    assert "95% CI" in r.out and "3–30" in r.out and "84–100" in r.out
    # The summary fits 80 columns; paths are never broken when the output is piped.
    assert all(len(line) <= 80 for line in r.out.splitlines() if str(out) not in line)
    assert f"report: {out / 'report.html'}" in r.out.splitlines()

    rebuilt = cli("report", out)
    assert rebuilt.code == 0, rebuilt.err
    assert "few_shot beats zero_shot" in rebuilt.out
    assert f"wrote {out / 'comparisons.csv'}" in rebuilt.out.replace("\n", "")


def test_run_with_repeats_reports_flakiness_and_pass_at_k(project: Project, cli: Cli) -> None:
    path = project.write(
        "evals/s.yaml",
        suite_text("repeat: 3", n=10).replace(
            "max_tokens: 32", "max_tokens: 32\n  temperature: 0.7"
        ),
    )
    out = project.root / "out"
    r = cli("run", path, "-o", out)
    assert r.code == 100, r.err
    for s in read_csv(out / "summary.csv"):
        assert (s["repeats"], s["k"], s["tests"], s["cells"]) == ("3", "3", "10", "30")
        for name in ("flake_rate", "pass_at_k", "pass_pow_k"):
            assert 0 <= float(s[name]) <= 1
        assert float(s["pass_pow_k"]) <= float(s["pass_rate"]) <= float(s["pass_at_k"])
    comparisons = read_csv(out / "comparisons.csv")
    assert {c["method"] for c in comparisons} == {"permutation"}
    win = next(c for c in comparisons if (c["a"], c["b"]) == ("zero_shot", "few_shot"))
    assert win["n_tests"] == "10"  # tests are the unit, not cells
    assert win["significant"] == "True"  # 8 of 10 tests better: p = 2/2^8, times 3 (Holm)


# --- native-library order (measured crash on a CUDA build; see promptlab/backends/native.py) ----


AT_LOAD = """
import sys
import promptlab.engine.runner as runner
real = runner.open_backend
seen = []
def spy(*args, **kwargs):
    seen.append(sorted({"pandas", "pyarrow", "scipy", "statsmodels"} & set(sys.modules)))
    return real(*args, **kwargs)
runner.open_backend = spy
from promptlab.cli import main
try:
    main(["run", sys.argv[1], "-o", sys.argv[2], "--no-cache", "--fail-under", "0.5",
          "--junit", sys.argv[3]])
except SystemExit:
    pass
print("SEEN", seen)
"""


def test_no_pandas_or_scipy_is_loaded_before_a_model(project: Project, tmp_path: Path) -> None:
    # With a CUDA build, pandas (pyarrow) or scipy imported before llama.cpp loads a model
    # crashed the load; promptlab imports them only for the reports, after every model is in.
    path = project.write("evals/s.yaml", suite_text(n=8))
    out = subprocess.run(
        [sys.executable, "-c", AT_LOAD, str(path), str(tmp_path / "run"), str(tmp_path / "j.xml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "SEEN [[]]" in out.stdout, out.stdout + out.stderr
    assert (tmp_path / "run" / "comparisons.csv").is_file()  # the statistics did run, afterwards


def test_make_libstdcxx_global_exposes_libstdcxx_symbols() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the RTLD_GLOBAL preload is Linux-only")
    code = """
import ctypes
symbol = "_ZNSt6localeD1Ev"  # std::locale::~locale()
before = hasattr(ctypes.CDLL(None), symbol)
from promptlab.backends.native import make_libstdcxx_global
make_libstdcxx_global()
print(before, hasattr(ctypes.CDLL(None), symbol))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr


def test_the_llama_backend_preloads_libstdcxx_before_llama_cpp() -> None:
    import ast

    source = (Path(__file__).parents[2] / "promptlab" / "backends" / "llama.py").read_text()
    body = ast.parse(source).body
    call = next(
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", "") == "make_libstdcxx_global"
    )
    first_llama = next(
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Import) and any(a.name.startswith("llama_cpp") for a in node.names)
    )
    assert call < first_llama


# --- the numpy ports against the libraries they follow -------------------------------------------


@pytest.mark.parametrize("n", [14, 20, 40])
def test_random_sign_flips_draw_exactly_what_scipy_draws(n: int) -> None:
    # Past 2^13 flips both sample: the same generator calls give the same null distribution.
    d = np.random.default_rng(n).normal(size=n).round(2)
    res = sps.permutation_test(
        (d,),
        lambda x, axis=-1: x.sum(axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=stats.N_PERMUTATIONS_QUICK,
        alternative="two-sided",
        random_state=np.random.default_rng(stats.SEED),
    )
    assert significance._sign_flip_p(d, stats.N_PERMUTATIONS_QUICK) == pytest.approx(res.pvalue)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bootstrap_port_matches_scipy(method: str, seed: int) -> None:
    data = np.random.default_rng(seed).random(int(12 + 9 * seed))
    ref = sps.bootstrap(
        (data,), np.mean, n_resamples=999, method=method, random_state=np.random.default_rng(0)
    ).confidence_interval
    got = intervals._bootstrap_interval(data, method.lower(), 0.95, 999, 0)
    assert got == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_wilson_mcnemar_and_holm_match_statsmodels() -> None:
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.proportion import proportion_confint

    for k, n in [(0, 1), (0, 7), (3, 7), (7, 7), (41, 100), (999, 1000)]:
        assert stats.wilson(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"))
    for b, c in [(0, 0), (1, 9), (4, 4), (0, 13), (30, 52)]:
        expected = mcnemar([[5, b], [c, 5]], exact=True).pvalue
        assert significance.binom_two_sided(min(b, c), b + c) == pytest.approx(expected)
    p = [0.01, 0.04, 0.03, 0.2, 0.04, 0.5]
    assert stats.holm_adjust(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_stats_import_no_scipy_or_statsmodels() -> None:
    code = "import sys, promptlab.reports.stats; print(sorted(m for m in ('scipy', 'statsmodels') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
