"""The report page's data: its values as the page shows them, and the grid's cells (tests ×
variants, each cell the list of its repeats) as JSON that is safe inside the page.

Plain rows and summary records in, plain values out; the HTML is assembled in html.py and
page_summary.py.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

PAGE_SIZE = 50  # tests per grid page (the reader can pick 25-500)

# --- values as the page shows them -------------------------------------------------------------


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def esc(value: Any) -> str:
    return html.escape(as_text(value), quote=True)


def number(value: Any) -> float | None:
    """A finite number, or None (missing, NaN, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def pct(value: Any, digits: int = 0) -> str:
    x = number(value)
    return "" if x is None else f"{x * 100:.{digits}f}%"


# --- safe embedding ----------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def embed_json(data: Any) -> str:
    """JSON that is safe as the text of a <script type="application/json"> element.

    `<`, `>` and `&` only occur inside JSON strings, where their \\u escapes mean the same
    characters, so nothing can close the element or open a comment; U+2028/2029 are escaped for
    old JavaScript parsers."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        text = json.dumps(
            _finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str
        )
    return text.translate(_JSON_ESCAPES)


# --- variants ----------------------------------------------------------------------------------


def variant_key(rec: dict[str, Any]) -> tuple[str, str, str]:
    return (str(rec.get("model", "")), str(rec.get("prompt", "")), str(rec.get("setting") or ""))


def variant_label(key: tuple[str, str, str], with_model: bool) -> str:
    model, prompt, setting = key
    label = f"{prompt} [{setting}]" if setting else prompt
    return f"{model} · {label}" if with_model else label


def _columns(rows: list[dict[str, Any]], prompt_order: list[str]) -> list[tuple[str, str, str]]:
    """Grid columns: every model × prompt × setting that ran, in suite order, plus every prompt of
    the suite that did not run for a model (an interrupted run shows what is missing)."""
    rank = {p: i for i, p in enumerate(prompt_order)}
    columns: list[tuple[str, str, str]] = []
    for model in dict.fromkeys(str(r["model"]) for r in rows):
        seen = list(dict.fromkeys(variant_key(r) for r in rows if r["model"] == model))
        ran = {k[1] for k in seen}
        seen += [(model, p, "") for p in prompt_order if p not in ran]
        first = {k: i for i, k in enumerate(seen)}
        seen.sort(key=lambda k: (rank.get(k[1], len(rank)), first[k]))
        columns += seen
    return columns


# --- the grid's data ---------------------------------------------------------------------------


class _Pool:
    """Values many cells share (rendered prompts across repeats, params, messages), stored once."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[str, int] = {}

    def add(self, value: Any) -> int | None:
        if value is None:
            return None
        key = value if isinstance(value, str) else "\0" + as_text(value)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.values)
            self.values.append(value)
        return index


def _compact(row: dict[str, Any], pool: _Pool) -> dict[str, Any]:
    """One repeat of one cell, with short keys (5,000 of these make up most of the page)."""
    cell: dict[str, Any] = {
        "s": row["status"],
        "o": row.get("output"),
        "r": row.get("repeat", 0),
        "sd": row.get("seed", (row.get("params") or {}).get("seed")),
        "sc": number(row.get("score")),
        "c": row.get("checks") or [],
        "p": pool.add(row.get("rendered_prompt")),
        "lat": number(row.get("latency_ms")),
        "pt": row.get("prompt_tokens"),
        "ct": row.get("completion_tokens"),
        "pe": row.get("prompt_eval_tokens"),
        "tps": number(row.get("tokens_per_s")),
        "fin": row.get("finish_reason"),
        "pa": pool.add(row.get("params")),
        "id": row.get("cell_id"),
    }
    messages = row.get("messages")
    if messages:
        cell["m"] = pool.add(messages)
        cell["chat"] = bool(row.get("chat_applied"))
    optional = {
        "e": row.get("error"),
        "ca": bool(row.get("cached")) or None,
        "lp": row.get("logprobs") or None,
        "g": row.get("grammar"),
        "ns": row.get("named_scores") or None,
        "md": row.get("metadata") or None,
    }
    cell.update({k: v for k, v in optional.items() if v is not None})
    return cell


UNCHECKED = "unchecked"  # no check gated the output: shown as "no checks", never as a pass
_NOT_FAILED = ("pass", UNCHECKED)


def _outcome(statuses: list[str]) -> str:
    if all(s == UNCHECKED for s in statuses):
        return UNCHECKED
    checked = [s for s in statuses if s != UNCHECKED]
    passed = sum(s == "pass" for s in checked)
    return "pass" if passed == len(checked) else "fail" if passed == 0 else "mixed"


def grid_data(
    rows: list[dict[str, Any]], summary: list[dict[str, Any]], prompt_order: list[str]
) -> dict[str, Any]:
    """What the grid script draws: variants (columns), tests (rows) with their filter flags, and
    each cell as the list of its repeats."""
    columns = _columns(rows, prompt_order)
    col_index = {k: i for i, k in enumerate(columns)}
    several_models = len({k[0] for k in columns}) > 1
    by_variant = {variant_key(r): r for r in summary}
    variants = []
    for key in columns:
        rec = by_variant.get(key, {})
        variants.append(
            {
                "model": key[0],
                "prompt": key[1],
                "setting": key[2],
                "label": variant_label(key, several_models),
                "rate": number(rec.get("pass_rate")),
                "lo": number(rec.get("pass_rate_lo")),
                "hi": number(rec.get("pass_rate_hi")),
            }
        )
    pool = _Pool()
    tests: dict[Any, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["test_index"], r.get("repeat", 0))):
        test = tests.get(row["test_index"])
        if test is None:
            test = tests[row["test_index"]] = {
                "i": row["test_index"],
                "name": row.get("test", ""),
                "vars": row.get("vars") or {},
                "cells": [None] * len(columns),
            }
        index = col_index[variant_key(row)]
        if test["cells"][index] is None:
            test["cells"][index] = []
        test["cells"][index].append(_compact(row, pool))
    for test in tests.values():
        ran = [[rep["s"] for rep in cell] for cell in test["cells"] if cell]
        outcomes = {_outcome(statuses) for statuses in ran}
        test["failing"] = any(s not in _NOT_FAILED for statuses in ran for s in statuses)
        test["disagree"] = len(outcomes) > 1
        test["flaky"] = "mixed" in outcomes
    return {
        "variants": variants,
        "tests": sorted(tests.values(), key=lambda t: t["i"]),
        "pool": pool.values,
        "logprobs": any(r.get("logprobs") for r in rows),
        "repeats": max((int(r.get("repeat", 0)) + 1 for r in rows), default=1),
        "pageSize": PAGE_SIZE,
    }
