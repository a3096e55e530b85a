"""One paired comparison of A and B over the tests they share: `paired` computes it, `holm`
adjusts a family of them, `verdict` says it in a sentence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from promptlab.reports.stats.intervals import bootstrap_mean, newcombe_paired
from promptlab.reports.stats.significance import (
    ALPHA,
    DETECT_POINTS,
    MIN_TESTS,
    binom_two_sided,
    holm_adjust,
    permutation_p,
    tests_needed,
)

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

Outcome = bool | Sequence[bool]
Score = float | Sequence[float]


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


def rounded(x: float | None, digits: int = 4) -> float | None:
    """A plain float for CSV and JSON, to `digits` places (None stays None)."""
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
    c.a_pass_rate, c.b_pass_rate = rounded(a_rate.mean()), rounded(b_rate.mean())
    c.diff = rounded(100 * d.mean(), 2)
    c.a_only, c.b_only = int((d < 0).sum()), int((d > 0).sum())
    if all(len(t) == 1 for t in a_out + b_out):
        c.method = "mcnemar-exact"
        n11 = int(((a_rate == 1) & (b_rate == 1)).sum())
        n00 = int(((a_rate == 0) & (b_rate == 0)).sum())
        c.p_value = binom_two_sided(min(c.a_only, c.b_only), c.a_only + c.b_only)
        ci = newcombe_paired(n11, c.a_only, c.b_only, n00) if len(a_out) > 1 else None
    else:
        c.method = "permutation"
        c.p_value = permutation_p(d)
        ci = bootstrap_mean(d)
    if ci is not None:
        c.diff_lo, c.diff_hi = rounded(100 * ci[0], 2), rounded(100 * ci[1], 2)
    c.p_holm = c.p_value
    if a_scores is not None and b_scores is not None:
        if not len(a_scores) == len(b_scores) == len(a_out):
            raise ValueError("scores must have one entry per test, like the outcomes")
        a_s = np.array([sum(t) / len(t) for t in _per_test(a_scores)])
        b_s = np.array([sum(t) / len(t) for t in _per_test(b_scores)])
        sd = b_s - a_s
        c.score_diff = rounded(sd.mean())
        # 0/1 scores that move with the outcomes are the same numbers: reuse their test (and,
        # with repeats, their bootstrap interval) instead of computing it again.
        same = bool(np.array_equal(sd, d))
        sci = ci if same and c.method == "permutation" else bootstrap_mean(sd)
        c.score_p_value = c.p_value if same else permutation_p(sd)
        if sci is not None:
            c.score_diff_lo, c.score_diff_hi = rounded(sci[0]), rounded(sci[1])
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
