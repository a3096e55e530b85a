"""Backend features beyond plain completion: grammars, token logprobs, choice scoring, embeddings.

The fake-backend tests pin the deterministic rules the engine's own tests rely on. The `model`
tests run the bundled SmolLM2 and Gemma3 in this process (small n_ctx, few tokens; the file takes
well under a minute); only the grammar-refusal test, whose failure mode is a segfault inside
llama.cpp, runs in a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptlab.backends import (
    CellError,
    LoadSettings,
    Sampling,
    TokenLogprob,
    json_schema_to_grammar,
    open_backend,
)
from promptlab.errors import BackendError, InputError

SETTINGS = LoadSettings(
    n_gpu_layers=None, n_ctx=512, n_batch=512, n_threads=2, n_threads_batch=2, flash_attn=False,
    seed=0,
)  # fmt: skip
GREEDY = Sampling(0.0, 0.95, 40, 0.05, 12, (), 0, 1.0)
REPO = Path(__file__).resolve().parents[2]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- fake backend ------------------------------------------------------------------------------


def test_fake_grammar_reply_and_invalid() -> None:
    backend = open_backend("fake://reply?text=%7B%22a%22%3A+1%7D", SETTINGS)
    gen = backend.generate("q", False, GREEDY, grammar='root ::= "x"')
    assert gen.text == '{"a": 1}'
    assert backend.check_grammar('root ::= "x"') is None
    problem = backend.check_grammar("root ::= INVALID")
    assert problem is not None and "INVALID" in problem
    with pytest.raises(CellError, match="refused the grammar"):
        backend.generate("q", False, GREEDY, grammar="root ::= INVALID")


def test_fake_logprobs() -> None:
    backend = open_backend("fake://reply?text=Paris+is+lovely", SETTINGS)
    gen = backend.generate("q", False, GREEDY, logprobs=3)
    assert gen.tokens is not None
    assert [t.text for t in gen.tokens] == ["Paris", " is", " lovely"]
    assert "".join(t.text for t in gen.tokens) == gen.text
    assert len(gen.tokens) == gen.completion_tokens
    assert gen.tokens[0].logprob == pytest.approx(-0.5)
    for tok in gen.tokens:
        assert len(tok.top) == 3
        lps = [lp for _, lp in tok.top]
        assert lps == sorted(lps, reverse=True)
        assert tok.top[0] == (tok.text, tok.logprob)
    assert all(t.top == () for t in backend.generate("q", False, GREEDY, logprobs=0).tokens or [])
    assert backend.generate("q", False, GREEDY).tokens is None
    json.dumps([dataclasses.asdict(t) for t in gen.tokens])


def test_fake_score_choices_rule_and_bias() -> None:
    backend = open_backend("fake://echo", SETTINGS)
    ctx = "The capital of France is Paris. Answer:"
    scores = backend.score_choices(ctx, False, [" London", " Paris", " Pari", ""])
    assert scores[1].logprob == pytest.approx(-0.1) and scores[1].is_greedy
    assert scores[1].logprob > scores[2].logprob > scores[0].logprob  # near miss beats unrelated
    assert not scores[0].is_greedy and scores[0].n_tokens == 1
    assert scores[3].logprob == 0.0 and scores[3].n_tokens == 0
    biased = open_backend("fake://echo?choice_bias=London", SETTINGS)
    scores = biased.score_choices(ctx, False, [" London", " Paris"])
    assert scores[0].logprob > scores[1].logprob and scores[0].is_greedy
    assert backend.score_choices(ctx, False, []) == []


def test_fake_score_choices_cell_errors() -> None:
    small = open_backend("fake://echo", dataclasses.replace(SETTINGS, n_ctx=4))
    with pytest.raises(CellError, match="n_ctx"):
        small.score_choices("one two three four five", False, ["six"])
    failing = open_backend("fake://echo?fail_on=BOOM", SETTINGS)
    with pytest.raises(CellError, match="BOOM"):
        failing.score_choices("BOOM goes", False, ["x"])


def test_fake_embed_and_modes() -> None:
    emb = open_backend("fake://echo", SETTINGS, embedding=True)
    a, b, c, a2 = emb.embed(
        ["The cat sat on the mat.", "A cat sat on a mat.", "Quarterly GDP fell 4%", "The cat sat on the mat."]
    )  # fmt: skip
    assert math.isclose(cosine(a, a2), 1.0, abs_tol=1e-9)
    assert math.isclose(cosine(a, a), 1.0, abs_tol=1e-9)
    assert cosine(a, b) > cosine(a, c)
    assert emb.embed([""]) == [[0.0] * len(a)]
    with pytest.raises(BackendError, match="embedding"):
        emb.generate("q", False, GREEDY)
    with pytest.raises(BackendError, match="embedding"):
        emb.score_choices("q", False, ["a"])
    with pytest.raises(BackendError, match="embedding=True"):
        open_backend("fake://echo", SETTINGS).embed(["x"])


# --- JSON schema → GBNF (pure Python) ------------------------------------------------------------


def test_fake_barrier_waits_for_its_peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """barrier=N (test_two_actors_... relies on it): a loading process marks itself beside the
    rules file and goes on once N have; alone under barrier=2 it gives up with a BackendError."""
    from promptlab.backends import fake

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"hi": "there"}))
    open_backend(f"fake://rules?file={rules}&barrier=1", SETTINGS)  # only itself to wait for
    assert [p.name for p in tmp_path.glob("rules.json.loaded-*")] == [
        f"rules.json.loaded-{os.getpid()}"
    ]
    monkeypatch.setattr(fake, "BARRIER_TIMEOUT_S", 0.2)
    with pytest.raises(BackendError, match="only 1 of 2 processes loaded"):
        open_backend(f"fake://rules?file={rules}&barrier=2", SETTINGS)
    (tmp_path / "rules.json.loaded-999999").touch()  # a peer: now two have loaded
    backend = open_backend(f"fake://rules?file={rules}&barrier=2", SETTINGS)
    assert backend.generate("hi", False, GREEDY).text == "there"
    with pytest.raises(InputError, match="need rules mode"):
        open_backend("fake://echo?barrier=2", SETTINGS)


def test_schema_to_gbnf_converts() -> None:
    gbnf = json_schema_to_grammar(
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, "s.yaml"
    )
    assert "root ::=" in gbnf and '\\"a\\"' in gbnf


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "foo"}, "Unrecognized schema"),
        ({"$ref": "https://example.com/s.json"}, "remote"),
        ({"$ref": "other.json"}, "Unsupported ref"),
        ({"type": "string", "pattern": "[a-z]+"}, "Pattern must start"),
        ({"$ref": "#/definitions/missing"}, "missing"),
        ([1, 2], "must be an object"),
        ({"type": "object", "properties": ["a"]}, "cannot turn"),
        ({"enum": [{1, 2}]}, "not plain JSON"),
    ],
)
def test_schema_to_gbnf_refuses_with_location(schema: Any, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        json_schema_to_grammar(schema, "evals/x.yaml:3: schema")
    text = exc.value.one_line()
    assert text.startswith("evals/x.yaml:3: schema: ")
    assert fragment.lower() in text.lower()
    assert exc.value.hint


# --- real models -------------------------------------------------------------------------------


def _model_path(alias: str) -> Path:
    from promptlab.models import BUNDLED

    # The user's cache, not a test's PROMPTLAB_CACHE: gemma3 is assembled there once (253 MB).
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PROMPTLAB_CACHE", raising=False)
        path = BUNDLED[alias].locate()
    if path is None:
        pytest.fail(f"{alias} is not installed: {BUNDLED[alias].install}")
    return path


@pytest.fixture(scope="module")
def smol() -> Iterator[Any]:
    backend = open_backend(_model_path("smollm2"), SETTINGS)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def gemma() -> Iterator[Any]:
    backend = open_backend(_model_path("gemma3"), SETTINGS)
    yield backend
    backend.close()


class Reference:
    """The slow, obviously-right way: a separate logits_all model, context + choice from scratch.

    split=False evaluates context + choice as one batch. split=True evaluates the context, then
    the choice but its last token, as two batches (still from scratch, still a separate model):
    the batch shapes score_choices uses on an empty cache. On this CPU build llama.cpp's logits depend on the batch shape: measured
    on Gemma3, a position's logprob jumps by 0.23 nats when its batch grows from 15 to 16 tokens
    (another matmul path), and token-by-token decoding differs from one batch by up to 0.3
    nats, and moving the split point of a 26-token sequence moves a logprob by up to 0.17 nats
    (flash attention on or off, f16 or f32 KV). SmolLM2 is bit-identical however it is split.
    So SmolLM2 is held to the one-batch reference (with prefix reuse between cases), Gemma3 to
    the split one from an empty cache, and Gemma3's one-batch difference is only printed.
    """

    def __init__(self, path: Path) -> None:
        import llama_cpp

        from promptlab.backends.llama_runtime import without_extra_buffers

        # Extra buffers off, as the backend loads (backends/llama_decode.py).
        with without_extra_buffers(True):
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_gpu_layers=0, n_ctx=512, n_batch=512, n_ubatch=512,
                n_threads=SETTINGS.n_threads, n_threads_batch=SETTINGS.n_threads_batch,
                seed=0, flash_attn=SETTINGS.flash_attn,  # must match: it shifts logprobs (NOTES §2)
                logits_all=True, verbose=False,
            )  # fmt: skip

    def logprob(
        self, context: str, choice: str, add_bos: bool, *, split: bool = False
    ) -> tuple[float, int]:
        import numpy as np

        tok = self.llm.tokenize
        whole = tok((context + choice).encode(), add_bos=add_bos, special=True)
        ctx = tok(context.encode(), add_bos=add_bos, special=True)
        assert whole[: len(ctx)] == ctx, "pick cases where the context tokens are a prefix"
        self.llm.reset()
        if split:
            self.llm.eval(whole[: len(ctx)])
            if len(whole) - 1 > len(ctx):
                self.llm.eval(whole[len(ctx) : -1])  # the last token's row is never needed
        else:
            self.llm.eval(whole)
        rows = np.asarray(self.llm.scores[len(ctx) - 1 : len(whole) - 1], dtype=np.float64)
        m = rows.max(axis=1, keepdims=True)
        lp = rows - (m + np.log(np.exp(rows - m).sum(axis=1, keepdims=True)))
        target = whole[len(ctx) :]
        return float(sum(lp[i, t] for i, t in enumerate(target))), len(target)

    def close(self) -> None:
        self.llm.close()


def _chat_context() -> str:
    from promptlab.models.gguf import read_gguf
    from promptlab.plan.chat import ChatTemplate
    from promptlab.templates import Message

    info = read_gguf(_model_path("smollm2"))
    assert info.chat_template
    template = ChatTemplate("gguf:tokenizer.chat_template", info.chat_template, "", "<|im_end|>")
    return template.apply([Message("user", "Is the earth round? Answer yes or no.")], "test")


def _check_against_reference(
    backend: Any, path: Path, cases: list[Any], add_bos: bool, *, split: bool = False
) -> tuple[float, float]:
    """(max |difference| to the reference asked for, max |difference| to the one-batch one)."""
    ref = Reference(path)
    worst = worst_one_batch = 0.0
    try:
        for context, choices in cases:
            if split:
                backend.engine.clear()  # the split reference starts from an empty cache too
            scores = backend.score_choices(context, add_bos, choices)
            for choice, score in zip(choices, scores, strict=True):
                expected, n = ref.logprob(context, choice, add_bos, split=split)
                assert score.n_tokens == n, (context, choice)
                assert isinstance(score.logprob, float)
                assert score.logprob == pytest.approx(expected, abs=1e-3), (context, choice)
                worst = max(worst, abs(score.logprob - expected))
                one_batch, _ = ref.logprob(context, choice, add_bos)
                worst_one_batch = max(worst_one_batch, abs(score.logprob - one_batch))
    finally:
        ref.close()
    return worst, worst_one_batch


@pytest.mark.model
def test_score_choices_matches_reference_smollm2(smol: Any) -> None:
    cases = [
        ("The capital of France is", [" Paris", " London", " the city of Lyon, obviously"]),
        (
            "Q: What color is the sky?\nA: Blue\nQ: What do cows drink?\nA:",
            [" Milk", " Water", " Orange juice with ice"],
        ),
        (_chat_context(), ["Yes", "No", "Yes, the earth is round."]),
        ("Q: What color is the sky?\nA: Blue\nQ: What do bees make?\nA:", [" Honey", " Wax"]),
    ]
    worst, _ = _check_against_reference(smol, _model_path("smollm2"), cases, add_bos=False)
    print(f"smollm2 max |score_choices - one-batch reference| = {worst:.2e}")


@pytest.mark.model
def test_score_choices_matches_reference_gemma3(gemma: Any) -> None:
    cases = [
        ("The capital of Italy is", [" Rome", " Milan", " the city of Naples"]),
        ("2 + 2 =", [" 4", " 5", " four"]),
        ("Q: What is the capital of Italy?\nA:", [" Rome", " Naples, in the south"]),
    ]
    worst, one_batch = _check_against_reference(
        gemma, _model_path("gemma3"), cases, add_bos=True, split=True
    )
    print(
        f"gemma3 max |score_choices - split reference| = {worst:.2e}; "
        f"vs one-batch reference {one_batch:.2e}"
    )


@pytest.mark.model
def test_score_choices_keeps_the_kv_cache_consistent(smol: Any) -> None:
    prompt = "Q: What is the capital of Spain?\nA:"
    fresh = open_backend(_model_path("smollm2"), SETTINGS)
    try:
        expected = fresh.generate(prompt, False, GREEDY).text
        expected_longer = fresh.generate(prompt + " The", False, GREEDY).text
    finally:
        fresh.close()
    # Generate first, so the cache holds prompt + completion; then score; then generate again.
    smol.generate(prompt + " Madrid", False, GREEDY)
    ctx_tokens = smol.tokenize(prompt, False)
    first = smol.score_choices(prompt, False, [" Madrid", " Barcelona, Catalonia"])
    # Some stream holds exactly the context (the choices' tokens were removed again).
    assert any(stream.tokens == ctx_tokens for stream in smol.engine.streams)
    # Exactly the context: the cached-prompt path must not sample from the last choice's logits.
    assert smol.generate(prompt, False, GREEDY).text == expected
    assert smol.score_choices(prompt, False, [" Madrid", " Barcelona, Catalonia"]) == first
    assert smol.generate(prompt + " The", False, GREEDY).text == expected_longer
    assert first[0].logprob > first[1].logprob


@pytest.mark.model
def test_score_choices_tokenization_fallback_and_limits(smol: Any) -> None:
    # "is " + "Paris" re-tokenizes the space into " Paris", so the context is not a prefix:
    # the choice is tokenized alone and scored after the context's tokens.
    (score,) = smol.score_choices("The capital of France is ", False, ["Paris"])
    assert score.n_tokens == len(smol.tokenize("Paris", False))
    assert math.isfinite(score.logprob) and score.logprob < 0
    with pytest.raises(CellError, match="n_ctx"):
        smol.score_choices("word " * 600, False, [" yes"])
    with pytest.raises(CellError, match="empty context"):
        smol.score_choices("", False, [" yes"])


@pytest.mark.model
def test_json_schema_grammar_output_validates(smol: Any) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["Paris", "London", "Rome"]},
            "sure": {"type": "boolean"},
        },
        "required": ["answer", "sure"],
    }
    gbnf = json_schema_to_grammar(schema, "test")
    assert smol.check_grammar(gbnf) is None
    prompt = (
        "<|im_start|>user\nWhat is the capital of France? Reply in JSON.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    gen = smol.generate(prompt, False, dataclasses.replace(GREEDY, max_tokens=48), grammar=gbnf)
    assert gen.finish_reason == "stop", gen
    jsonschema.validate(json.loads(gen.text), schema)


BAD_GRAMMARS = """
import json
from promptlab.backends import CellError, LoadSettings, Sampling, open_backend
from promptlab.models import BUNDLED

backend = open_backend(BUNDLED["smollm2"].locate(), LoadSettings(None, 256, 256, 2, 2, False, 0))
result = {}
for name, gbnf in [("syntax", 'root ::= "a" ('), ("undefined", "root ::= foo"),
                   ("left_recursion", 'root ::= "a" | root "b"'), ("no_root", 'x ::= "a"'),
                   ("dead_start", 'root ::= "\\\\x00"'), ("empty", "  ")]:
    problem = backend.check_grammar(gbnf)
    try:
        backend.generate("Hi", False, Sampling(0.0, 0.95, 40, 0.05, 4, (), 0, 1.0), grammar=gbnf)
        raised = None
    except CellError as exc:
        raised = exc.one_line()
    result[name] = [problem, raised]
ok = backend.generate("Hi", False, Sampling(0.0, 0.95, 40, 0.05, 4, (), 0, 1.0), grammar='root ::= "ok"')
result["after"] = ok.text
print(json.dumps(result))
"""


@pytest.mark.model
def test_bad_grammars_are_cell_errors_not_crashes() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMPTLAB_CACHE"}
    proc = subprocess.run(
        [sys.executable, "-c", BAD_GRAMMARS],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "", "the library must print nothing (the parser writes to fd 2)"
    result = json.loads(proc.stdout)
    assert result.pop("after") == "ok"
    expected = {
        "syntax": "expecting ')'",
        "undefined": "Undefined rule identifier 'foo'",
        "left_recursion": "left recursion",
        "no_root": "does not contain a 'root' symbol",
        "dead_start": "can start it",
        "empty": "empty",
    }
    for name, (problem, raised) in result.items():
        assert problem is not None and expected[name] in problem, (name, problem)
        assert "\n" not in problem
        assert raised is not None and raised.startswith("llama.cpp refused the grammar: "), raised
        assert expected[name] in raised


@pytest.mark.model
def test_logprobs_topk(smol: Any) -> None:
    prompt = "The capital of France is"
    plain = smol.generate(prompt, False, GREEDY)
    gen = smol.generate(prompt, False, GREEDY, logprobs=3)
    assert gen.text == plain.text  # capturing changes nothing
    assert gen.tokens is not None and len(gen.tokens) == gen.completion_tokens > 0
    assert "".join(t.text for t in gen.tokens) == gen.text
    for tok in gen.tokens:
        assert isinstance(tok, TokenLogprob) and type(tok.logprob) is float
        assert len(tok.top) == 3
        lps = [lp for _, lp in tok.top]
        assert all(type(lp) is float for lp in lps)
        assert lps == sorted(lps, reverse=True)
        assert tok.logprob <= tok.top[0][1] + 1e-4
        assert tok.logprob == pytest.approx(tok.top[0][1], abs=1e-9)  # greedy: the argmax
        assert tok.text == tok.top[0][0]
    json.dumps(dataclasses.asdict(gen))
    # logprobs=0: chosen token only; sampling at temperature > 0 need not pick top[0].
    warm = dataclasses.replace(GREEDY, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    sampled = smol.generate(prompt, False, warm, logprobs=2)
    assert sampled.tokens is not None and len(sampled.tokens) == sampled.completion_tokens
    assert all(t.logprob <= t.top[0][1] + 1e-4 for t in sampled.tokens)
    assert sampled.text == smol.generate(prompt, False, warm).text
    zero = smol.generate(prompt, False, GREEDY, logprobs=0)
    assert zero.tokens is not None and all(t.top == () for t in zero.tokens)
    # The chosen-token logprob is the same number score_choices computes for that token.
    (first,) = smol.score_choices(prompt, False, [gen.tokens[0].text])
    assert first.logprob == pytest.approx(gen.tokens[0].logprob, abs=1e-3)


@pytest.mark.model
def test_logprob_texts_split_multibyte_characters(smol: Any) -> None:
    from types import SimpleNamespace

    ids = smol.tokenize("日本 🦙!", False)
    job = SimpleNamespace(completion=ids, steps=[(t, -1.0, [(t, -1.0)]) for t in ids])
    tokens = smol.engine._token_logprobs(job)
    assert "".join(t.text for t in tokens) == "日本 🦙!"
    assert len(tokens) == len(ids) and any(t.text == "" for t in tokens)  # emoji spans tokens


@pytest.mark.model
def test_embeddings_smollm2() -> None:
    backend = open_backend(_model_path("smollm2"), SETTINGS, embedding=True)
    try:
        same1, same2, similar, unrelated = backend.embed(
            [
                "The cat sat on the mat.",
                "The cat sat on the mat.",
                "A cat was sitting on the rug.",
                "Quarterly earnings of the bank fell sharply.",
            ]
        )
        assert all(type(v) is float for v in same1)
        assert math.isclose(cosine(same1, same1), 1.0, abs_tol=1e-6)
        assert math.isclose(cosine(same1, same2), 1.0, abs_tol=1e-5)
        assert cosine(same1, similar) > cosine(same1, unrelated)
        with pytest.raises(BackendError, match="embedding mode"):
            backend.generate("x", False, GREEDY)
        with pytest.raises(BackendError, match="embedding mode"):
            backend.score_choices("x", False, ["y"])
        with pytest.raises(CellError, match="no tokens"):
            backend.embed([""])
    finally:
        backend.close()


@pytest.mark.model
def test_embed_needs_embedding_mode(smol: Any) -> None:
    with pytest.raises(BackendError, match="embedding=True"):
        smol.embed(["x"])


@pytest.mark.model
def test_fresh_context_scores_do_not_depend_on_the_previous_call(gemma: Any) -> None:
    """On Gemma3 logits vary with decode batching, so the runner scores from a fresh context."""
    context = "Q: Which planet is the largest in the solar system?\nA:"
    choices = [" Jupiter", " Mars", " Venus"]
    gemma.score_choices("Q: Which planet is closest to the sun?\nA:", True, choices)
    after_other = gemma.score_choices(context, True, choices, reuse_prefix=False)
    gemma.score_choices("Something unrelated entirely.", True, choices)
    again = gemma.score_choices(context, True, choices, reuse_prefix=False)
    assert [s.logprob for s in after_other] == [s.logprob for s in again]
