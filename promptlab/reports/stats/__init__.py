"""Statistics for prompt variants: intervals, repeat metrics and paired comparisons.

numpy and the standard library only. The methods are scipy's and statsmodels' (named at each
function), ported step for step, resampling included, and tests/reports/test_stats.py checks them against
those libraries, which stay development dependencies: importing scipy.stats and statsmodels took
about 2 s of every run on a 2-vCPU machine, more than the rest of a cached rerun together. On
top of that, `tables.run_statistics` memoizes a run's statistics by its rows. Every function
takes and returns plain Python values (floats, ints, None), ready for CSV, JSON and HTML.

The modules, lowest first: `intervals` (Wilson, bootstrap, Newcombe), `repeats` (pass@k, pass^k,
flake rate), `significance` (permutation test, exact McNemar, Holm, tests needed), `comparison`
(`paired`, `holm`, `verdict`) and `runs` (whole runs). Every name below is importable from here
(`stats.wilson`, `stats.paired`, ...).

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

from promptlab.reports.stats.comparison import (
    COMPARISON_COLUMNS,
    Comparison,
    Outcome,
    Score,
    holm,
    paired,
    verdict,
)
from promptlab.reports.stats.intervals import (
    N_BOOTSTRAP,
    SEED,
    Interval,
    bootstrap_mean,
    newcombe_paired,
    wilson,
)
from promptlab.reports.stats.repeats import RepeatStats, pass_at_k, pass_pow_k, repeat_stats
from promptlab.reports.stats.runs import compare_run, variant_stats
from promptlab.reports.stats.significance import (
    ALPHA,
    DETECT_POINTS,
    MIN_TESTS,
    N_PERMUTATIONS,
    N_PERMUTATIONS_QUICK,
    POWER,
    holm_adjust,
    permutation_p,
    tests_needed,
)

__all__ = [
    "ALPHA",
    "COMPARISON_COLUMNS",
    "DETECT_POINTS",
    "MIN_TESTS",
    "N_BOOTSTRAP",
    "N_PERMUTATIONS",
    "N_PERMUTATIONS_QUICK",
    "POWER",
    "SEED",
    "Comparison",
    "Interval",
    "Outcome",
    "RepeatStats",
    "Score",
    "bootstrap_mean",
    "compare_run",
    "holm",
    "holm_adjust",
    "newcombe_paired",
    "paired",
    "pass_at_k",
    "pass_pow_k",
    "permutation_p",
    "repeat_stats",
    "tests_needed",
    "variant_stats",
    "verdict",
    "wilson",
]
