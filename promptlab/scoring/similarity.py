"""Similarity measures for `similar`, `levenshtein`, `rouge-n`, `rouge-l` and `bleu`.

Lexical measures come from well-kept libraries: rapidfuzz (Levenshtein; LCS for ROUGE-L) and
sacrebleu (sentence BLEU with its standard smoothing). Embedding cosine uses vectors from a GGUF
model through the backend. All scores are in [0, 1].
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from promptlab.errors import InputError
from promptlab.scoring.checks import Check, CheckContext, PrepareEnv, Verdict, _bool

METHODS = ("embedding", "levenshtein", "rouge-l", "rouge-n", "bleu")
# What a bare type means: `similar` is embedding cosine, as in promptfoo.
DEFAULT_METHOD = {
    "similar": "embedding",
    "levenshtein": "levenshtein",
    "rouge-n": "rouge-n",
    "rouge-l": "rouge-l",
    "bleu": "bleu",
}

_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens, as ROUGE's default tokenizer does (punctuation dropped)."""
    return _WORD.findall(text.lower())


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        return 0.0
    return max(0.0, min(1.0, dot / (na * nb)))


def levenshtein_distance(a: str, b: str) -> int:
    from rapidfuzz.distance import Levenshtein  # noqa: PLC0415 - only suites that use it

    return int(Levenshtein.distance(a, b))


def levenshtein_similarity(a: str, b: str) -> float:
    from rapidfuzz.distance import Levenshtein  # noqa: PLC0415

    return float(Levenshtein.normalized_similarity(a, b))


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over word tokens, using rapidfuzz's longest-common-subsequence."""
    from rapidfuzz.distance import LCSseq  # noqa: PLC0415

    c, r = tokens(candidate), tokens(reference)
    if not c or not r:
        return 0.0
    lcs = LCSseq.similarity(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_n(candidate: str, reference: str, n: int = 1) -> float:
    """ROUGE-N F1: clipped n-gram overlap between candidate and reference word tokens."""
    c, r = tokens(candidate), tokens(reference)
    cg = Counter(tuple(c[i : i + n]) for i in range(len(c) - n + 1))
    rg = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
    overlap = sum((cg & rg).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(cg.values()), overlap / sum(rg.values())
    return 2 * precision * recall / (precision + recall)


def bleu(candidate: str, reference: str) -> float:
    """Sentence BLEU (sacrebleu, exponential smoothing), scaled to [0, 1]."""
    import sacrebleu  # noqa: PLC0415 - only suites that use it

    return float(sacrebleu.sentence_bleu(candidate, [reference]).score) / 100.0


def lexical(
    method: str, candidate: str, reference: str, config: Mapping[str, Any] | None = None
) -> float:
    if method == "rouge-l":
        return rouge_l(candidate, reference)
    if method == "rouge-n":
        n = int((config or {}).get("n", 1))
        return rouge_n(candidate, reference, n)
    if method == "bleu":
        return bleu(candidate, reference)
    if method == "levenshtein":
        return levenshtein_similarity(candidate, reference)
    raise ValueError(f"unknown lexical method {method!r}")


# promptfoo's defaults where a type has a natural threshold.
DEFAULT_THRESHOLDS = {
    "similar": 0.75,
    "rouge-n": 0.75,
    "rouge-l": 0.75,
    "bleu": 0.5,
    "levenshtein": 5.0,  # a maximum edit distance, as in promptfoo
}


def _prep_similarity(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    _e: PrepareEnv,
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    method = opts.get("method") or DEFAULT_METHOD.get(base, base)
    if method not in METHODS:
        raise InputError(
            f"{where}: unknown similarity method {method!r}",
            hint=f"use one of: {', '.join(METHODS)}",
        )
    opts["method"] = method
    if value is None or isinstance(value, dict):
        raise InputError(
            f"{where}: '{type_}' needs the expected text as value (or a list of texts)"
        )
    refs = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(base, 0.75)
    if base != "levenshtein" and not 0 <= threshold <= 1:
        raise InputError(
            f"{where}: a {base} threshold is a similarity in [0, 1], got {threshold:g}"
        )
    return refs, threshold


def _similar(check: Check, ctx: CheckContext) -> Verdict:
    assert check.threshold is not None
    method = check.options["method"]
    refs: list[str] = check.value
    if method == "embedding":
        if ctx.services is None:
            return _bool(False, "embedding similarity needs a model (run it with promptlab run)")
        vectors = ctx.services.embed(check.options.get("provider"), [ctx.output, *refs])
        scores = [cosine(vectors[0], v) for v in vectors[1:]]
    elif method == "levenshtein":
        distances = [levenshtein_distance(ctx.output, r) for r in refs]
        best = min(range(len(refs)), key=lambda i: distances[i])
        dist = distances[best]
        ok = dist <= check.threshold
        score = levenshtein_similarity(ctx.output, refs[best])
        return (
            ok,
            score,
            f"edit distance {dist} {'<=' if ok else '>'} {check.threshold:g}",
            {"distance": dist, "similarity": round(score, 4)},
        )
    else:
        scores = [lexical(method, ctx.output, r, check.options.get("config")) for r in refs]
    score = max(scores)
    ok = score >= check.threshold
    return (
        ok,
        score,
        f"{method} similarity {score:.3f} {'>=' if ok else '<'} {check.threshold:g}",
        {"method": method, "similarity": round(score, 4)},
    )
