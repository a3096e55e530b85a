"""Intervals: Wilson for a pass rate, the bootstrap (BCa) for a mean, Newcombe's for a paired
difference of pass rates; with the normal quantile and CDF scipy.special would give."""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist

import numpy as np

SEED = 0  # fixed seed: the same rows always give the same intervals and p-values
N_BOOTSTRAP = 4999

Interval = tuple[float, float]


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
