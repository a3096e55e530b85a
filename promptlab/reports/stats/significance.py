"""Significance: the paired permutation (sign-flip) test, exact McNemar, Holm's adjustment, and
how many more tests a comparison would need (Connor 1987)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from promptlab.reports.stats.intervals import SEED

ALPHA = 0.05  # significance level of every verdict (after Holm)
POWER = 0.8  # power of the "how many more tests" calculation
DETECT_POINTS = 10.0  # the difference the power calculation aims to detect, in points
N_PERMUTATIONS = 9999  # scipy enumerates all sign flips exactly when there are fewer
N_PERMUTATIONS_QUICK = 1999  # first pass; rerun with N_PERMUTATIONS when p is near or below ALPHA
# Below 6 paired tests no exact two-sided test can reach p < 0.05 (the smallest p is 2 / 2^n).
MIN_TESTS = 6

_NORMAL = NormalDist()


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


def binom_two_sided(k: int, n: int) -> float:
    """statsmodels' exact McNemar: 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1."""
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, as statsmodels multipletests(method="holm")."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    m = p.size
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]
