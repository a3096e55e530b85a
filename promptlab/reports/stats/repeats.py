"""Repeats (several outcomes per test): unbiased pass@k and pass^k, and the flake rate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
