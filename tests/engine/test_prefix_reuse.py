"""Exact prefix reuse: results never depend on what the KV cache held before, and shared prefixes
are still reused (backends/llama_decode.py), in both fill modes: split-invariant (what the
self-test picks on the bundled models: every shared token reused, at least MIN_CHUNK decoded)
and canonical (the fallback: reuse in whole chunks, LoadSettings.prefix_chunk).

On this CPU build llama.cpp's logits depend on how many tokens of a sequence a decode held (one,
two to seven, or eight and more), so llama-cpp-python's plain longest-common-prefix reuse made a
cell's output depend on the cell before it. Here every
call on one long-lived model, after a chain of different previous calls (unrelated, sharing
less than C tokens, exactly C, a few C's, a ragged length, identical), must give bit-identical
text, token logprobs and choice scores to the same call on a freshly loaded model; and the
prompt tokens evaluated must show the reuse. The real models run in this process, like
test_backend_features.py (small n_ctx, few tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from promptlab.backends import LoadSettings, Sampling, open_backend
from promptlab.backends.llama_decode import MIN_CHUNK
from promptlab.models import BUNDLED

pytestmark = pytest.mark.model

C = 64
SETTINGS = LoadSettings(
    n_gpu_layers=None, n_ctx=1024, n_batch=512, n_threads=2, n_threads_batch=2, flash_attn=False,
    seed=0, prefix_chunk=C,
)  # fmt: skip
GREEDY = Sampling(0.0, 0.95, 40, 0.05, 6, (), 0, 1.0)
CHOICES = [" bread", " fish and cloth", " nothing at all"]
WORDS = [
    "the",
    "old",
    "town",
    "stood",
    "by",
    "a",
    "wide",
    "river",
    "and",
    "every",
    "morning",
    "the",
    "people",
    "walked",
    "down",
    "to",
    "the",
    "market",
    "to",
    "sell",
    "bread",
    "fish",
    "and",
    "cloth",
    "while",
    "the",
    "children",
    "played",
    "near",
    "the",
    "water",
    "and",
    "the",
    "old",
    "men",
    "talked",
    "about",
    "the",
    "weather",
    "the",
    "harvest",
    "and",
    "the",
    "price",
    "of",
    "salt",
]


def _path(alias: str) -> Path:
    path = BUNDLED[alias].locate()
    if path is None:
        pytest.fail(f"{alias} is not installed: {BUNDLED[alias].install}")
    return path


def head(backend: Any, n: int, add_bos: bool) -> str:
    """Text of exactly n tokens: 'Notes:' and words of WORDS, one token each."""
    text = "Notes:"
    i = 0
    while len(backend.tokenize(text, add_bos)) < n:
        text += " " + WORDS[i % len(WORDS)]
        i += 1
    assert len(backend.tokenize(text, add_bos)) == n, "a word took two tokens: pick others"
    return text


@dataclass
class Case:
    alias: str
    add_bos: bool
    prompts: dict[str, str]
    ab: int  # tokens A and B share
    ua: int  # tokens U and A share (a BOS at most)


def shared(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def build_case(alias: str, add_bos: bool) -> Case:
    backend: Any = open_backend(_path(alias), SETTINGS)
    try:
        tok = backend.tokenize
        long = head(backend, 300, add_bos)
        prompts = {
            "A": long + "\nQuestion: What did the people sell at the market?\nAnswer:",
            "B": long + "\nIn one sentence, the town",  # shares A's 300 tokens and more
            "G": head(backend, 3 * C, add_bos) + "\nThe river",  # shares exactly 3C with A
            "D": head(backend, C, add_bos) + "\nThe market",  # shares exactly C
            "E": head(backend, 40, add_bos) + "\nThe children",  # shares fewer than C
            "U": "Recipe for pancakes: mix flour, eggs and milk, then",  # unrelated
        }
        t = {k: tok(v, add_bos) for k, v in prompts.items()}
        # The prefix lengths this test is about (the tokenizers split at the newline).
        assert shared(t["A"], t["G"]) == 3 * C
        assert shared(t["A"], t["D"]) == C
        assert shared(t["A"], t["E"]) == 40
        ab = shared(t["A"], t["B"])
        assert ab > 300 and ab % C != 0
        assert len(t["U"]) < C
    finally:
        backend.close()
    return Case(alias, add_bos, prompts, ab, shared(t["U"], t["A"]))


@pytest.fixture(scope="module", params=[("smollm2", False), ("gemma3", True)], ids=lambda p: p[0])
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    alias, add_bos = request.param
    yield build_case(alias, add_bos)


# Each step runs on one long-lived model, so it comes after every step before it: after an
# unrelated prompt, the identical prompt, prompts sharing a ragged 300+ tokens, exactly 3C,
# exactly C and 40 < C, generation after scoring the same context and the other way round.
STEPS = [
    ("gen", "U"),  # cold
    ("gen", "A"),  # after an unrelated prompt
    ("gen", "A"),  # identical (the cache holds A and its completion)
    ("score", "A"),  # the same context
    ("gen", "B"),  # shares 300+ tokens with A (the cache holds exactly A)
    ("score", "B"),  # right after generating from the same context
    ("gen", "B"),  # right after scoring the same context
    ("gen", "G"),  # shares exactly 3C with B
    ("score", "D"),  # shares exactly C with G
    ("gen", "E"),  # shares 40 < C with D
    ("score", "A"),  # shares 40 with E
]


def run_step(backend: Any, case: Case, kind: str, name: str) -> Any:
    text = case.prompts[name]
    if kind == "gen":
        return backend.generate(text, case.add_bos, GREEDY, logprobs=3)
    return backend.score_choices(text, case.add_bos, CHOICES, reuse_prefix=True)


@pytest.fixture(params=["split-invariant", "canonical"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of planning a fill (backends/llama_decode.py): the self-test picks the first on
    the bundled models; the second is the fallback, forced here."""
    if request.param == "canonical":
        monkeypatch.setenv("PROMPTLAB_FILL_MODE", "canonical")
    else:
        monkeypatch.delenv("PROMPTLAB_FILL_MODE", raising=False)
    return str(request.param)


def test_results_do_not_depend_on_the_cache(case: Case, mode: str) -> None:
    path = _path(case.alias)
    # References: every distinct step on a freshly loaded model.
    fresh: dict[tuple[str, str], Any] = {}
    for kind, name in dict.fromkeys(STEPS):
        backend = open_backend(path, SETTINGS)
        try:
            fresh[(kind, name)] = run_step(backend, case, kind, name)
        finally:
            backend.close()
    warm = open_backend(path, SETTINGS)
    assert warm.info.facts["fill_mode"] == mode
    evaluated: list[tuple[str, int, int]] = []
    try:
        for i, (kind, name) in enumerate(STEPS):
            got = run_step(warm, case, kind, name)
            want = fresh[(kind, name)]
            where = f"step {i} {kind} {name} on {case.alias}"
            if kind == "gen":
                assert got.text == want.text, where
                assert got.tokens == want.tokens, where  # every logprob, bit for bit
                assert got.completion_tokens == want.completion_tokens, where
                evaluated.append((name, got.prompt_tokens, got.prompt_eval_tokens))
            else:
                assert got == want, where  # every score, bit for bit
    finally:
        warm.close()
    print(case.alias, evaluated)
    # Reuse happened where it should: (prompt, tokens, evaluated) per generation step.
    n = {name: tokens for name, tokens, _ in evaluated}
    if mode == "canonical":
        expected = [
            n["U"],  # cold
            n["A"],  # nothing shared with U
            n["A"] - (n["A"] - 1) // C * C,  # identical: only the last chunk again
            n["B"] - 256,  # shares 300+ with A: its 4 whole chunks reused ...
            n["B"] - 256,  # ... also right after scoring B (its last chunk is partial)
            # shares exactly 3C; a last chunk under MIN_CHUNK joins the one before it
            n["G"] - 3 * C if n["G"] - 3 * C >= MIN_CHUNK else n["G"] - 2 * C,
            n["E"] - 32,  # shares 40 < C: the early boundaries 16 and 32 still let 32 be reused
        ]
    else:
        # Every shared token is reused, but at least MIN_CHUNK are decoded (llama_decode.py).
        expected = [
            n["U"],  # cold
            n["A"] - case.ua,  # nothing shared with U but a BOS
            MIN_CHUNK,  # identical: the last MIN_CHUNK tokens again, for the logits
            max(MIN_CHUNK, n["B"] - case.ab),  # shares 300+ with A
            MIN_CHUNK,  # right after scoring B
            max(MIN_CHUNK, n["G"] - 3 * C),  # shares exactly 3C
            max(MIN_CHUNK, n["E"] - 40),  # shares 40
        ]
    assert [e[2] for e in evaluated] == expected


def test_prefix_chunk_is_capped_by_n_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTLAB_FILL_MODE", "canonical")
    backend = open_backend(_path("smollm2"), LoadSettings(None, 256, 32, 1, 1, False, 0, 64))
    try:
        assert backend.info.facts["prefix_chunk"] == 32
        g = backend.generate("Notes: " + " ".join(WORDS), False, GREEDY)
        again = backend.generate("Notes: " + " ".join(WORDS) + " and", False, GREEDY)
        assert g.prompt_eval_tokens == g.prompt_tokens
        # Reuse in whole chunks of 32, the last chunk decoded again.
        assert again.prompt_eval_tokens == again.prompt_tokens - (g.prompt_tokens - 1) // 32 * 32
    finally:
        backend.close()
