"""Whole runs, from rows as written to results.jsonl: each variant's numbers, and every paired
comparison in the run, Holm-adjusted together."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import combinations
from typing import Any

import numpy as np

from promptlab.reports.stats.comparison import Comparison, holm, paired, rounded
from promptlab.reports.stats.intervals import bootstrap_mean, wilson
from promptlab.reports.stats.repeats import repeat_stats
from promptlab.reports.stats.significance import DETECT_POINTS

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
                "pass_rate": rounded(passed / cells) if cells else None,
                "pass_rate_lo": rounded(ci[0]) if ci else None,
                "pass_rate_hi": rounded(ci[1]) if ci else None,
                "mean_score": rounded(float(np.mean(all_scores))) if all_scores else None,
                "mean_score_lo": rounded(sci[0]) if sci else None,
                "mean_score_hi": rounded(sci[1]) if sci else None,
                "flake_rate": rounded(rep.flake_rate) if rep else None,
                "pass_at_k": rounded(rep.pass_at_k) if rep else None,
                "pass_pow_k": rounded(rep.pass_pow_k) if rep else None,
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
