# Over 600 lines: the statistics, each ported from scipy/statsmodels and tested against them.
"""Statistics for prompt variants: intervals, repeat metrics and paired comparisons.

numpy and the standard library only. The methods are scipy's and statsmodels' (named at each
function), ported step for step, resampling included, and tests/reports/test_stats.py checks them against
those libraries, which stay development dependencies: importing scipy.stats and statsmodels took
about 2 s of every run on a 2-vCPU machine, more than the rest of a cached rerun together. On
top of that, `report.run_statistics` memoizes a run's statistics by its rows. Every function
takes and returns plain Python values (floats, ints, None), ready for CSV, JSON and HTML.

Public API
----------
Intervals (95% unless `confidence` says otherwise):
- ``wilson(passed, n) -> (lo, hi) | None`` Wilson score interval for a pass rate
  (statsmodels ``proportion_confint(method="wilson")``); None when n == 0.
- ``newcombe_paired(both, a_only, b_only, neither) -> (lo, hi) | None`` the paired difference
  of two pass rates, B - A (Newcombe 1998, method 10).
- ``bootstrap_mean(values) -> (lo, hi) | None`` bootstrap interval for a mean
  (``scipy.stats.bootstrap``, BCa, 4,999 resamples, fixed seed, so reports are reproducible;
  percentile where BCa is undefined). None when fewer than 2 values; (v, v) when all values are v.

Repeats (several outcomes per test):
- ``pass_at_k(n, c, k)``: the chance that at least one of k draws passes, unbiased from n
  repeats with c passes: 1 - C(n-c, k) / C(n, k).
- ``pass_pow_k(n, c, k)``: the chance that all k draws pass: C(c, k) / C(n, k).
- ``repeat_stats(outcomes, k=None) -> RepeatStats | None``: flake rate (share of tests whose
  repeats disagree), pass@k and pass^k averaged over tests; k defaults to the largest number of
  repeats (a test with fewer repeats n < k uses k = n). None when no test has 2+ outcomes.

Paired comparisons (tests are the unit; an error counts as a fail with score 0):
- ``paired(a_pass, b_pass, a_scores, b_scores, labels) -> Comparison``: A vs B over aligned
  tests. Each element is one test: a bool (one outcome) or a sequence of bools (its repeats);
  scores likewise. Pass/fail: exact McNemar when every test has one outcome, otherwise a paired
  permutation test (``scipy.stats.permutation_test``, sign flips) on per-test pass rates. Scores:
  paired permutation test on per-test mean scores. Differences are B - A (pass rate in points)
  with Newcombe's paired score interval (one outcome per test) or a paired-bootstrap interval
  over tests (repeats, and scores). ``p_holm`` starts equal to ``p_value``.
  Significance and the verdict use ``p_holm``, so a lone ``paired`` call is unadjusted.
- ``holm(comparisons)``: Holm-adjust the pass and the score p-values (two separate families)
  across a list of comparisons, in place, and rewrite `significant`, `tests_needed` and the
  verdicts. Call it once over every comparison of a run.
- ``permutation_p(diffs)``: the two-sided paired permutation p-value for per-test differences.
- ``tests_needed(n_tests, discordance, detect_points=10)``: how many more tests a paired
  pass-rate comparison needs to detect ``detect_points`` points (alpha 0.05, power 0.8;
  Connor 1987).
- ``verdict(comparison) -> str``: the plain-language sentence, e.g. "few_shot beats zero_shot by
  +18 points [6, 30], p=0.004" or "plain vs chat: no detectable difference (+3 points [-8, 14],
  p=0.62): about 40 more tests would be needed to detect 10 points".
- ``Comparison.as_dict()``: the COMPARISON_COLUMNS as plain values.

Whole runs (rows as written to results.jsonl: model, prompt, setting, test_index, status, score):
- ``variant_stats(rows) -> list[dict]``: one dict per model x prompt x setting (first-seen order)
  with tests, repeats, cells, passed, pass_rate(+_lo/_hi), mean_score(+_lo/_hi), flake_rate,
  pass_at_k, pass_pow_k, k (those four None without repeats) and rank (by pass rate within a
  model, 1 = best, ties share the better rank).
- ``compare_run(rows) -> list[dict]``: every pair of prompts (same model and setting), of models
  (same prompt and setting) and of settings (same model and prompt), Holm-adjusted across the
  whole run, as COMPARISON_COLUMNS dicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from statistics import NormalDist
from typing import Any

import numpy as np

ALPHA = 0.05  # significance level of every verdict (after Holm)
POWER = 0.8  # power of the "how many more tests" calculation
DETECT_POINTS = 10.0  # the difference the power calculation aims to detect, in points
SEED = 0  # fixed seed: the same rows always give the same intervals and p-values
N_BOOTSTRAP = 4999
N_PERMUTATIONS = 9999  # scipy enumerates all sign flips exactly when there are fewer
N_PERMUTATIONS_QUICK = 1999  # first pass; rerun with N_PERMUTATIONS when p is near or below ALPHA
# Below 6 paired tests no exact two-sided test can reach p < 0.05 (the smallest p is 2 / 2^n).
MIN_TESTS = 6

COMPARISON_COLUMNS = (
    "dimension",
    "group",
    "a",
    "b",
    "n_tests",
    "unpaired",
    "a_pass_rate",
    "b_pass_rate",
    "diff",
    "diff_lo",
    "diff_hi",
    "method",
    "p_value",
    "p_holm",
    "a_only",
    "b_only",
    "score_diff",
    "score_diff_lo",
    "score_diff_hi",
    "score_p_value",
    "score_p_holm",
    "significant",
    "tests_needed",
    "verdict",
)

Interval = tuple[float, float]
Outcome = bool | Sequence[bool]
Score = float | Sequence[float]


# --------------------------------------------------------------------------- intervals


def wilson(passed: int, n: int, confidence: float = 0.95) -> Interval | None:
    """Wilson score interval for passed/n; None when n == 0."""
    if n <= 0:
        return None
    # statsmodels proportion_confint(method="wilson"), with its clipping to [0, 1].
    q = passed / n
    crit = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    crit2 = crit**2
    denom = 1 + crit2 / n
    center = (q + crit2 / (2 * n)) / denom
    dist = crit * math.sqrt(q * (1.0 - q) / n + crit2 / (4.0 * n**2)) / denom
    return min(1.0, max(0.0, center - dist)), min(1.0, max(0.0, center + dist))


def bootstrap_mean(
    values: Iterable[float],
    confidence: float = 0.95,
    *,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = SEED,
) -> Interval | None:
    """Bootstrap interval for the mean of `values` (BCa; percentile where BCa is undefined).

    None for fewer than 2 values (no spread to resample); (v, v) when every value is v.
    """
    data = np.asarray(list(values), dtype=float)
    if data.size < 2:
        return None
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    ci = None
    for method in ("bca", "percentile"):
        with np.errstate(all="ignore"):  # BCa is undefined (nan) for some discrete samples
            ci = _bootstrap_interval(data, method, confidence, n_resamples, seed)
        if np.isfinite(ci[0]) and np.isfinite(ci[1]):
            break
    assert ci is not None
    return float(ci[0]), float(ci[1])


_NORMAL = NormalDist()


def _ndtri(p: float) -> float:
    """The standard normal quantile, as scipy.special.ndtri (infinite at 0 and 1)."""
    if math.isnan(p):
        return math.nan
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return _NORMAL.inv_cdf(p)


def _ndtr(x: float) -> float:
    """The standard normal CDF, as scipy.special.ndtr."""
    return math.nan if math.isnan(x) else 0.5 * math.erfc(-x / math.sqrt(2.0))


def _bootstrap_interval(
    data: np.ndarray, method: str, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float]:
    """scipy.stats.bootstrap((data,), np.mean, method=..., random_state=default_rng(seed)),
    one sample, one batch: the same resamples (rng.integers), the same BCa correction (Efron
    and Tibshirani 14.3 and 15.4, jackknife acceleration) and the same linear quantiles."""
    rng = np.random.default_rng(seed)
    n = data.shape[-1]
    theta_b = data[rng.integers(0, n, (n_resamples, n))].mean(axis=-1)
    alpha = (1 - confidence) / 2
    if method == "bca":
        theta_hat = float(data.mean())
        below = np.count_nonzero(theta_b < theta_hat) + np.count_nonzero(theta_b <= theta_hat)
        z0 = _ndtri(below / (2 * n_resamples))
        keep = np.ones((n, n), dtype=bool)
        np.fill_diagonal(keep, False)
        jack = data[np.broadcast_to(np.arange(n), (n, n))[keep].reshape(n, n - 1)].mean(axis=-1)
        u = (n - 1) * (jack.mean() - jack)
        a_hat = (u**3).sum() / n**3 / 6 / ((u**2).sum() / n**2) ** 1.5
        z_alpha = _ndtri(alpha)
        num1, num2 = z0 + z_alpha, z0 - z_alpha
        levels = [_ndtr(z0 + num1 / (1 - a_hat * num1)), _ndtr(z0 + num2 / (1 - a_hat * num2))]
    else:
        levels = [alpha, 1 - alpha]
    if not all(0.0 <= lv <= 1.0 for lv in levels):
        return math.nan, math.nan
    lo, hi = np.quantile(theta_b, levels)
    return float(lo), float(hi)


def newcombe_paired(
    both: int, a_only: int, b_only: int, neither: int, confidence: float = 0.95
) -> Interval | None:
    """Interval for the paired difference of pass rates B - A (as fractions): Newcombe's hybrid
    score method for paired proportions (Newcombe 1998, Stat Med 17:2635, method 10).

    Why not the bootstrap here: with few tests a BCa bootstrap of 0/1 differences excludes zero
    where exact McNemar finds nothing (3 of 8 tests better and none worse: McNemar p=0.25, BCa
    [12, 75] points), and a verdict must not contradict its own interval. Newcombe's interval is
    built from the two Wilson intervals (statsmodels) and a correlation term, keeps good coverage
    for small samples (Fagerland et al. 2014) and matches McNemar in practice. statsmodels has no
    paired version (only `confint_proportions_2indep`), so the few lines combining them are here;
    with no correlation correction they reduce exactly to that function's "newcomb" method.
    """
    n = both + a_only + b_only + neither
    if n == 0:
        return None
    p_a, p_b = (both + a_only) / n, (both + b_only) / n
    lo_a, hi_a = wilson(both + a_only, n, confidence) or (0.0, 0.0)
    lo_b, hi_b = wilson(both + b_only, n, confidence) or (0.0, 0.0)
    # phi: the correlation between A's and B's outcomes, shrunk towards zero as Newcombe does.
    denom = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only
    shrunk = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = shrunk / math.sqrt(denom) if denom > 0 else 0.0
    d = p_b - p_a
    lower = d - math.sqrt(
        max(0.0, (p_b - lo_b) ** 2 - 2 * phi * (p_b - lo_b) * (hi_a - p_a) + (hi_a - p_a) ** 2)
    )
    upper = d + math.sqrt(
        max(0.0, (hi_b - p_b) ** 2 - 2 * phi * (hi_b - p_b) * (p_a - lo_a) + (p_a - lo_a) ** 2)
    )
    return max(-1.0, lower), min(1.0, upper)


# --------------------------------------------------------------------------- repeats


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n repeats with c passes: 1 - C(n-c, k) / C(n, k)."""
    _check_nck(n, c, k)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_pow_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k (all k draws pass) from n repeats with c passes: C(c, k) / C(n, k)."""
    _check_nck(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def _check_nck(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")


@dataclass(frozen=True)
class RepeatStats:
    flake_rate: float  # share of tests (with 2+ repeats) whose repeats disagree
    pass_at_k: float  # mean over tests
    pass_pow_k: float  # mean over tests
    k: int


def repeat_stats(outcomes: Sequence[Sequence[bool]], k: int | None = None) -> RepeatStats | None:
    """Flake rate, pass@k and pass^k over tests, each given as its list of repeat outcomes."""
    tests = [list(map(bool, o)) for o in outcomes if len(o) > 0]
    repeated = [t for t in tests if len(t) > 1]
    if not repeated:
        return None
    k = k or max(len(t) for t in tests)
    flaky = sum(len(set(t)) > 1 for t in repeated)
    at = [pass_at_k(len(t), sum(t), min(k, len(t))) for t in tests]
    pw = [pass_pow_k(len(t), sum(t), min(k, len(t))) for t in tests]
    return RepeatStats(flaky / len(repeated), float(np.mean(at)), float(np.mean(pw)), k)


# --------------------------------------------------------------------------- power


def tests_needed(
    n_tests: int,
    discordance: float,
    detect_points: float = DETECT_POINTS,
    alpha: float = ALPHA,
    power: float = POWER,
) -> int:
    """How many more paired tests would detect a `detect_points` difference (never negative).

    Normal-approximation sample size for McNemar's test, Connor R.J. (1987), "Sample size for
    testing differences in proportions for the paired-sample design", Biometrics 43(1):207-211:
        n = (z_{1-alpha/2} * sqrt(psi) + z_{1-beta} * sqrt(psi - delta^2))^2 / delta^2
    with delta the difference to detect and psi the discordance rate, here the observed mean of
    squared per-test differences (the share of discordant tests for single outcomes). A true
    difference of delta needs psi >= delta, so psi is floored at delta: zero observed
    discordance then still gives a finite, honest answer.
    """
    delta = detect_points / 100
    psi = max(float(discordance), delta)
    z_a = _NORMAL.inv_cdf(1 - alpha / 2)
    z_b = _NORMAL.inv_cdf(power)
    n = (z_a * math.sqrt(psi) + z_b * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2
    return max(0, math.ceil(n - 1e-9) - n_tests)


# --------------------------------------------------------------------------- comparisons


@dataclass
class Comparison:
    """A vs B over the tests they share. Differences are B - A; pass rates in [0, 1], `diff`
    and its interval in points (percentage points), score differences in score units."""

    a: str
    b: str
    n_tests: int
    a_pass_rate: float | None = None
    b_pass_rate: float | None = None
    diff: float | None = None
    diff_lo: float | None = None
    diff_hi: float | None = None
    method: str = ""
    p_value: float | None = None
    p_holm: float | None = None
    a_only: int = 0  # tests where A did better (passed while B failed, or a higher pass rate)
    b_only: int = 0  # tests where B did better
    score_diff: float | None = None
    score_diff_lo: float | None = None
    score_diff_hi: float | None = None
    score_p_value: float | None = None
    score_p_holm: float | None = None
    significant: bool = False  # pass-rate difference significant at ALPHA after Holm
    tests_needed: int | None = None  # more tests to detect DETECT_POINTS (when not significant)
    verdict: str = ""
    dimension: str = ""  # "prompt", "model" or "setting" (compare_run)
    group: str = ""  # the fixed parts, e.g. "model: smollm2 · setting: temperature=0.7"
    unpaired: int = 0  # tests only one side has, left out
    score_significant: bool = False  # score difference significant at ALPHA after Holm
    detect_points: float = DETECT_POINTS  # the difference tests_needed is sized for
    power_tests: int | None = None  # tests_needed whatever the verdict
    family: int = 1  # comparisons Holm adjusted this one with

    def as_dict(self) -> dict[str, Any]:
        """The COMPARISON_COLUMNS, as plain Python values."""
        data = asdict(self)
        return {name: data[name] for name in COMPARISON_COLUMNS}


def _per_test(values: Sequence[Any]) -> list[list[float]]:
    out: list[list[float]] = []
    for v in values:
        if isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)):
            out.append([float(v)])
        else:
            out.append([float(x) for x in v])
    return out


def _sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.sum(x, axis=axis))


def permutation_p(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired permutation test that the mean of per-test differences B - A is zero.

    ``scipy.stats.permutation_test`` on the differences with permutation_type="samples", which
    for one sample flips the sign of each difference independently (swapping A and B within a
    test). Zero differences are dropped first: their sign flips change nothing, and fewer values
    make scipy enumerate all 2^n flips exactly (n <= 13) instead of sampling N_PERMUTATIONS.
    For 0/1 outcomes this is exactly the two-sided exact McNemar (sign) test.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if d.size < 2:
        return 1.0  # one difference: its two sign flips are equally extreme (scipy needs 2+)
    p = 1.0
    # Sequential: a quick pass, then the full count only where p is small enough to matter
    # (the cost grows with tests x resamples; a p above ALPHA stays above it after Holm).
    for n_resamples in (N_PERMUTATIONS_QUICK, N_PERMUTATIONS):
        p = _sign_flip_p(d, n_resamples)
        if p > 1.2 * ALPHA or 2**d.size <= n_resamples:  # clearly not significant, or exact
            break
    return p


def _sign_flip_p(d: np.ndarray, n_resamples: int) -> float:
    """scipy.stats.permutation_test((d,), sum, permutation_type="samples", two-sided,
    random_state=default_rng(SEED)): every sign flip when there are at most n_resamples of
    them, else n_resamples random ones drawn exactly as scipy draws them (rng.permuted of the
    pair (d_i, -d_i)), with its +1 adjustment and its 100-eps tolerance for ties."""
    n = d.size
    pairs = np.stack([d, -d], axis=-1)  # per test: keep the sign, or flip it
    if 2**n <= n_resamples:
        exact, count = True, 2**n
        flips = ((np.arange(count)[:, None] >> np.arange(n - 1, -1, -1)) & 1).astype(np.intp)
    else:
        exact, count = False, n_resamples
        rng = np.random.default_rng(SEED)
        indices = np.tile(np.arange(2), (n_resamples, n, 1))
        flips = rng.permuted(indices, axis=-1)[..., 0]
    null = np.take_along_axis(pairs[None, :, :], flips[..., None], axis=-1)[..., 0].sum(axis=-1)
    observed = float(d.sum())
    gamma = abs(np.finfo(float).eps * 100 * observed)
    adjustment = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + adjustment) / (count + adjustment)
    greater = (np.count_nonzero(null >= observed - gamma) + adjustment) / (count + adjustment)
    return float(min(1.0, 2 * min(less, greater)))


def _binom_two_sided(k: int, n: int) -> float:
    """statsmodels' exact McNemar: 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1."""
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def paired(
    a_pass: Sequence[Outcome],
    b_pass: Sequence[Outcome],
    a_scores: Sequence[Score] | None = None,
    b_scores: Sequence[Score] | None = None,
    labels: tuple[str, str] = ("A", "B"),
    *,
    detect_points: float = DETECT_POINTS,
) -> Comparison:
    """Compare A and B over aligned tests (element i of each sequence is the same test)."""
    if len(a_pass) != len(b_pass):
        raise ValueError(f"a_pass has {len(a_pass)} tests but b_pass has {len(b_pass)}")
    a_out, b_out = _per_test(a_pass), _per_test(b_pass)
    c = Comparison(labels[0], labels[1], len(a_out), detect_points=detect_points)
    if not a_out:
        c.verdict = verdict(c)
        return c
    a_rate = np.array([sum(t) / len(t) for t in a_out])
    b_rate = np.array([sum(t) / len(t) for t in b_out])
    d = b_rate - a_rate
    c.a_pass_rate, c.b_pass_rate = _round(a_rate.mean()), _round(b_rate.mean())
    c.diff = _round(100 * d.mean(), 2)
    c.a_only, c.b_only = int((d < 0).sum()), int((d > 0).sum())
    if all(len(t) == 1 for t in a_out + b_out):
        c.method = "mcnemar-exact"
        n11 = int(((a_rate == 1) & (b_rate == 1)).sum())
        n00 = int(((a_rate == 0) & (b_rate == 0)).sum())
        c.p_value = _binom_two_sided(min(c.a_only, c.b_only), c.a_only + c.b_only)
        ci = newcombe_paired(n11, c.a_only, c.b_only, n00) if len(a_out) > 1 else None
    else:
        c.method = "permutation"
        c.p_value = permutation_p(d)
        ci = bootstrap_mean(d)
    if ci is not None:
        c.diff_lo, c.diff_hi = _round(100 * ci[0], 2), _round(100 * ci[1], 2)
    c.p_holm = c.p_value
    if a_scores is not None and b_scores is not None:
        if not len(a_scores) == len(b_scores) == len(a_out):
            raise ValueError("scores must have one entry per test, like the outcomes")
        a_s = np.array([sum(t) / len(t) for t in _per_test(a_scores)])
        b_s = np.array([sum(t) / len(t) for t in _per_test(b_scores)])
        sd = b_s - a_s
        c.score_diff = _round(sd.mean())
        # 0/1 scores that move with the outcomes are the same numbers: reuse their test (and,
        # with repeats, their bootstrap interval) instead of computing it again.
        same = bool(np.array_equal(sd, d))
        sci = ci if same and c.method == "permutation" else bootstrap_mean(sd)
        c.score_p_value = c.p_value if same else permutation_p(sd)
        if sci is not None:
            c.score_diff_lo, c.score_diff_hi = _round(sci[0]), _round(sci[1])
        c.score_p_holm = c.score_p_value
    c.power_tests = tests_needed(c.n_tests, float(np.mean(d**2)), detect_points)
    _decide(c)
    return c


def _decide(c: Comparison) -> None:
    c.significant = c.p_holm is not None and c.p_holm < ALPHA
    c.score_significant = c.score_p_holm is not None and c.score_p_holm < ALPHA
    c.tests_needed = None if c.significant else c.power_tests
    c.verdict = verdict(c)


def holm(comparisons: Sequence[Comparison]) -> None:
    """Holm-adjust p_value -> p_holm and score_p_value -> score_p_holm (separate families)
    across `comparisons`, in place, then update `significant` and the verdicts."""
    for raw, adjusted in (("p_value", "p_holm"), ("score_p_value", "score_p_holm")):
        family = [c for c in comparisons if getattr(c, raw) is not None]
        if not family:
            continue
        p = holm_adjust([getattr(c, raw) for c in family])
        for c, value in zip(family, p, strict=True):
            setattr(c, adjusted, min(1.0, float(value)))
            if raw == "p_value":
                c.family = len(family)
    for c in comparisons:
        _decide(c)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, as statsmodels multipletests(method="holm")."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    m = p.size
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]


def _p(p: float) -> str:
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def _points(diff: float, lo: float | None, hi: float | None) -> str:
    text = f"{diff:+.0f} points"
    if lo is not None and hi is not None:
        text += f" [{lo:.0f}, {hi:.0f}]"
    return text


def verdict(c: Comparison) -> str:
    """One plain-language sentence about a comparison, naming both sides.

    Signs are B - A ("B vs A: +3 points" means B passed 3 points more); p is the Holm-adjusted
    p-value; a winner is named only when that is below ALPHA.
    """
    if c.n_tests == 0 or c.diff is None or c.p_holm is None:
        return f"{c.b} vs {c.a}: no shared tests to compare"
    if c.significant:
        if c.diff >= 0:
            winner, loser, diff, lo, hi = c.b, c.a, c.diff, c.diff_lo, c.diff_hi
        else:
            winner, loser = c.a, c.b
            diff = -c.diff
            lo = None if c.diff_hi is None else -c.diff_hi
            hi = None if c.diff_lo is None else -c.diff_lo
        return f"{winner} beats {loser} by {_points(diff, lo, hi)}, {_p(c.p_holm)}"
    numbers = f"{_points(c.diff, c.diff_lo, c.diff_hi)}, {_p(c.p_holm)}"
    excludes_zero = (c.diff_lo is not None and c.diff_lo > 0) or (
        c.diff_hi is not None and c.diff_hi < 0
    )
    if c.a_only == 0 and c.b_only == 0:
        text, sep = f"{c.b} vs {c.a}: no difference, same results on all {_tests(c.n_tests)}", "; "
    elif excludes_zero and c.family > 1 and c.p_value is not None and c.p_value < ALPHA:
        # Significant alone, not once corrected for the other comparisons: say so, or the
        # interval (which is not adjusted) would seem to contradict the verdict.
        text = (
            f"{c.b} vs {c.a}: {numbers} after Holm correction over {c.family} comparisons, "
            f"not significant (p={c.p_value:.3f} alone)"
        )
        sep = ": "
    elif c.n_tests < MIN_TESTS:
        text, sep = f"{c.b} vs {c.a}: too few tests to tell ({numbers})", ": "
    else:
        text, sep = f"{c.b} vs {c.a}: no detectable difference ({numbers})", ": "
    if c.score_significant and c.score_diff is not None and c.score_p_holm is not None:
        better = c.b if c.score_diff > 0 else c.a
        lo, hi = c.score_diff_lo, c.score_diff_hi
        if c.score_diff < 0 and lo is not None and hi is not None:
            lo, hi = -hi, -lo
        interval = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
        text += (
            f", but {better} scores higher by {abs(c.score_diff):.2f}{interval}, "
            f"{_p(c.score_p_holm)}"
        )
    elif c.tests_needed is not None:
        points = f"{c.detect_points:g} points"
        if c.tests_needed > 0:
            more = "1 more test" if c.tests_needed == 1 else f"{c.tests_needed} more tests"
            text += f"{sep}about {more} would be needed to detect {points}"
        else:
            text += (
                f"{sep}{_tests(c.n_tests)} would likely have shown {points}, so any gap is smaller"
            )
    return text


def _tests(n: int) -> str:
    return "1 test" if n == 1 else f"{n} tests"


# --------------------------------------------------------------------------- whole runs

Key = tuple[str, str, str]  # model, prompt, setting


def _variants(rows: Iterable[dict[str, Any]]) -> dict[Key, dict[Any, list[tuple[bool, float]]]]:
    """(model, prompt, setting) -> test_index -> [(passed, score) per repeat], first-seen order."""
    variants: dict[Key, dict[Any, list[tuple[bool, float]]]] = {}
    for row in rows:
        key = (str(row["model"]), str(row["prompt"]), str(row.get("setting") or ""))
        passed = row.get("status") == "pass" if "status" in row else bool(row.get("pass"))
        score = row.get("score")
        value = 0.0 if row.get("status") == "error" or score is None else float(score)
        if math.isnan(value):
            value = 0.0
        variants.setdefault(key, {}).setdefault(row["test_index"], []).append((passed, value))
    return variants


def variant_stats(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model x prompt x setting: counts, intervals, repeat metrics and rank."""
    out: list[dict[str, Any]] = []
    for (model, prompt, setting), tests in _variants(rows).items():
        outcomes = [[p for p, _ in cells] for cells in tests.values()]
        cells = sum(len(o) for o in outcomes)
        passed = sum(sum(o) for o in outcomes)
        scores = [float(np.mean([s for _, s in cells])) for cells in tests.values()]
        all_scores = [s for cells in tests.values() for _, s in cells]
        ci = wilson(passed, cells)
        sci = bootstrap_mean(scores)
        rep = repeat_stats(outcomes)
        out.append(
            {
                "model": model,
                "prompt": prompt,
                "setting": setting,
                "tests": len(outcomes),
                "repeats": max((len(o) for o in outcomes), default=0),
                "cells": cells,
                "passed": passed,
                "pass_rate": _round(passed / cells) if cells else None,
                "pass_rate_lo": _round(ci[0]) if ci else None,
                "pass_rate_hi": _round(ci[1]) if ci else None,
                "mean_score": _round(float(np.mean(all_scores))) if all_scores else None,
                "mean_score_lo": _round(sci[0]) if sci else None,
                "mean_score_hi": _round(sci[1]) if sci else None,
                "flake_rate": _round(rep.flake_rate) if rep else None,
                "pass_at_k": _round(rep.pass_at_k) if rep else None,
                "pass_pow_k": _round(rep.pass_pow_k) if rep else None,
                "k": rep.k if rep else None,
            }
        )
    for model in dict.fromkeys(r["model"] for r in out):
        mine = [r for r in out if r["model"] == model]
        for r in mine:
            rate = r["pass_rate"] if r["pass_rate"] is not None else -1.0
            r["rank"] = 1 + sum(
                (o["pass_rate"] if o["pass_rate"] is not None else -1.0) > rate for o in mine
            )
    return out


_DIMENSIONS = (("prompt", 1), ("model", 0), ("setting", 2))  # dimension, index in Key
_NAMES = ("model", "prompt", "setting")


def compare_run(
    rows: Iterable[dict[str, Any]], *, detect_points: float = DETECT_POINTS
) -> list[dict[str, Any]]:
    """Every paired comparison in a run (prompts, models, settings), Holm-adjusted, as dicts."""
    variants = _variants(rows)
    comparisons: list[Comparison] = []
    for dimension, axis in _DIMENSIONS:
        groups: dict[tuple[str, ...], list[Key]] = {}
        for key in variants:
            fixed = tuple(v for i, v in enumerate(key) if i != axis)
            groups.setdefault(fixed, []).append(key)
        for fixed, keys in groups.items():
            names = [n for i, n in enumerate(_NAMES) if i != axis]
            group = " · ".join(f"{n}: {v}" for n, v in zip(names, fixed, strict=True) if v)
            for ka, kb in combinations(keys, 2):
                ta, tb = variants[ka], variants[kb]
                shared = [t for t in ta if t in tb]
                if not shared:
                    continue  # nothing to pair (e.g. choice-only cells outside the grid)
                c = paired(
                    [[p for p, _ in ta[t]] for t in shared],
                    [[p for p, _ in tb[t]] for t in shared],
                    [[s for _, s in ta[t]] for t in shared],
                    [[s for _, s in tb[t]] for t in shared],
                    (ka[axis] or "(default)", kb[axis] or "(default)"),
                    detect_points=detect_points,
                )
                c.dimension, c.group = dimension, group
                c.unpaired = len(set(ta) ^ set(tb))
                comparisons.append(c)
    holm(comparisons)
    return [c.as_dict() for c in comparisons]
