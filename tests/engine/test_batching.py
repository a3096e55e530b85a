"""Many cells at once (backends/llama_engine.py): a cell's result never depends on which cells
shared its decode steps, or on the fill mode, on both bundled models; and the runner handles
results that finish out of order."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, Project

from promptlab.backends import GenRequest, LoadSettings, Sampling, open_backend
from promptlab.models import BUNDLED

Cli = Callable[..., CliResult]


def _settings(parallel: int | None) -> LoadSettings:
    return LoadSettings(None, 1024, 512, 2, 2, False, 0, parallel=parallel)


def _requests(add_bos: bool) -> list[GenRequest]:
    head = "Notes on the town market: the people sold bread, fish and cloth by the river. "
    out = []
    for i in range(10):
        sampling = Sampling(
            temperature=0.0 if i % 3 else 0.8,
            top_p=0.95,
            top_k=40,
            min_p=0.05,
            max_tokens=4 + 3 * (i % 4),  # cells finish at different steps
            stop=("\n",) if i % 2 else (),
            seed=i,
            repeat_penalty=1.0 if i % 5 else 1.3,
        )
        grammar = 'root ::= "yes" | "no" | "maybe"' if i == 4 else None
        out.append(
            GenRequest(
                head + f"Question {i}: what did they sell on day {i}?\nAnswer:",
                add_bos,
                sampling,
                grammar=grammar,
                logprobs=2 if i % 4 == 1 else None,
                tag=i,
            )
        )
    return out


@pytest.fixture(scope="module", params=[("smollm2", False), ("gemma3", True)], ids=lambda p: p[0])
def model(request: pytest.FixtureRequest) -> Iterator[tuple[Path, bool]]:
    path = BUNDLED[request.param[0]].locate()
    if path is None:
        pytest.fail(f"{request.param[0]} is not installed")
    yield path, request.param[1]


@pytest.mark.model
def test_batched_generations_equal_each_cell_alone(model: tuple[Path, bool]) -> None:
    path, add_bos = model
    requests = _requests(add_bos)
    alone: dict[int, Any] = {}
    for req in requests:  # each on a freshly loaded model: no prefix, no neighbours
        backend = open_backend(path, _settings(1))
        try:
            alone[req.tag] = backend.generate(
                req.text, req.add_bos, req.sampling, grammar=req.grammar, logprobs=req.logprobs
            )
        finally:
            backend.close()
    backend = open_backend(path, _settings(None))
    try:
        facts = backend.info.facts
        # As wide as the self-test found exact, up to 8 on a CPU (Gemma 3: 7, measured).
        assert 1 < facts["parallel"] == min(8, facts["self_test"]["batch_width"])
        assert facts["fill_mode"] == "split-invariant"
        order = []
        for req, gen in backend.generate_batch(requests):
            order.append(req.tag)
            want = alone[req.tag]
            assert gen.text == want.text, req.tag
            assert gen.tokens == want.tokens, req.tag  # every logprob, bit for bit
            assert (gen.completion_tokens, gen.finish_reason) == (
                want.completion_tokens,
                want.finish_reason,
            )
        assert sorted(order) == list(range(10)) and order != sorted(order)  # out of order
        # The shared head was decoded once, then copied between streams or kept.
        again = list(backend.generate_batch(requests[:3]))
        assert all(g.prompt_eval_tokens < len(backend.tokenize(r.text, add_bos)) for r, g in again)
    finally:
        backend.close()


@pytest.mark.model
def test_choice_continuations_decoded_together_score_as_alone(model: tuple[Path, bool]) -> None:
    # Equal-length continuations are decoded in one batch, one stream each, where the
    # self-test proved it exact; every score must equal the one-at-a-time path (parallel: 1).
    from promptlab.backends.llama_choice import choice_groups

    path, add_bos = model
    context = "Notes on the town market: the people sold bread, fish and cloth. They sold"
    choices = [" fish and cloth", " bread and salt", " nothing at all", " bread", " old boats"]
    backend = open_backend(path, _settings(1))
    try:
        assert backend.info.facts["choice_rows"] == 0  # one stream: nothing to batch
        alone = backend.score_choices(context, add_bos, choices, reuse_prefix=False)
    finally:
        backend.close()
    backend = open_backend(path, _settings(None))
    try:
        facts = backend.info.facts
        checks = facts["self_test"]["checks"]
        assert facts["choice_rows"] == (
            facts["self_test"]["batch_width"] if checks["batched continuations"] else 0
        )
        together = backend.score_choices(context, add_bos, choices, reuse_prefix=False)
        assert together == alone  # every score, bit for bit
        engine: Any = backend.engine
        lengths = [
            len(backend._continuation(context, backend.tokenize(context, add_bos), c, add_bos))
            for c in choices
        ]
        groups = choice_groups(engine, [[0] * n for n in lengths])
        if facts["choice_rows"]:
            assert any(len(g) >= 2 for g in groups), (lengths, groups)
        # Every stream that took part holds the context afterwards: scoring again reuses it.
        assert backend.score_choices(context, add_bos, choices) == alone
    finally:
        backend.close()


@pytest.mark.model
def test_batched_cells_reuse_as_much_as_one_stream() -> None:
    # Cells sorted by text share a head, and cells of one topic share ~10 more tokens. One
    # stream always holds the cell before; with many streams a cell whose free stream holds
    # only the head must copy the busy stream that holds its topic (a gain under 16 tokens was
    # once left to decode again: 3.5% more prompt tokens on a few-shot suite).
    path = BUNDLED["smollm2"].locate()
    assert path is not None
    head = "Notes on the town market: the people sold bread, fish and cloth by the river. "
    topics = ["apples and pears from the hills", "nets and ropes for the boats", "wool, linen"]
    texts = sorted(
        head + f"Topic: {t} in the old square. Variant {v}, day {v + 1}.\nSummary:"
        for t in topics
        for v in range(4)
    )
    greedy = Sampling(0.0, 0.95, 40, 0.05, 2, (), 0, 1.0)
    evaluated = {}
    for parallel in (1, None):
        backend = open_backend(path, _settings(parallel))
        try:
            gens = list(
                backend.generate_batch([GenRequest(t, False, greedy, tag=t) for t in texts])
            )
            evaluated[parallel] = sum(g.prompt_eval_tokens for _, g in gens)
        finally:
            backend.close()
    assert evaluated[None] <= evaluated[1], evaluated


@pytest.mark.model
def test_canonical_fill_mode_gives_the_same_results(
    model: tuple[Path, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a split-invariant model any chunking of >= MIN_CHUNK gives the same logits, so the
    # fallback planner must agree with the default one bit for bit.
    path, add_bos = model
    requests = _requests(add_bos)[:5]
    results = {}
    for mode in ("split-invariant", "canonical"):
        if mode == "canonical":
            monkeypatch.setenv("PROMPTLAB_FILL_MODE", "canonical")
        backend = open_backend(path, _settings(1))
        try:
            assert backend.info.facts["fill_mode"] == mode
            results[mode] = {r.tag: (g.text, g.tokens) for r, g in backend.generate_batch(requests)}
        finally:
            backend.close()
    assert results["split-invariant"] == results["canonical"]


@pytest.mark.model
def test_device_sampling_picks_the_same_greedy_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    path = BUNDLED["smollm2"].locate()
    assert path is not None
    greedy = [r for r in _requests(False) if r.sampling.temperature == 0 and r.grammar is None]
    results = {}
    for forced in ("0", "1"):
        monkeypatch.setenv("PROMPTLAB_DEVICE_SAMPLING", forced)
        backend = open_backend(path, _settings(None))
        try:
            assert backend.info.facts["device_sampling"] is (forced == "1")
            results[forced] = {r.tag: g.text for r, g in backend.generate_batch(greedy)}
        finally:
            backend.close()
    assert results["0"] == results["1"]


# --- the runner with results out of order (fake backend) ------------------------------------------


def _suite(parallel: str) -> str:
    return f"""
prompts: ["Say {{{{ word }}}} please", "Repeat {{{{ word }}}} {{{{ word }}}} {{{{ word }}}}"]
models: [{{path: "fake://echo", parallel: {parallel}}}]
tests:
  - vars: {{word: alpha}}
    assert: [{{type: icontains, value: "{{{{ word }}}}"}}]
  - vars: {{word: beta gamma delta}}
    assert: [{{type: icontains, value: "{{{{ word }}}}"}}]
  - vars: {{word: epsilon}}
    assert: [{{type: choice, value: " yes", choices: [" yes", " no"]}}]
  - vars: {{word: zeta}}
    assert: [{{type: llm-rubric, value: "mentions zeta"}}]
"""


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_parallel_runs_score_every_cell_and_report_in_suite_order(
    project: Project, cli: Cli
) -> None:
    outputs = {}
    for parallel in ("1", "4"):
        suite = project.write(f"evals/p{parallel}.yaml", _suite(parallel))
        out = project.root / f"out{parallel}"
        result = cli("run", suite, "-o", out, "--no-cache")
        assert result.code in (0, 100), result.err
        rows = _rows(out)
        assert len(rows) == 8
        outputs[parallel] = {r["cell_id"]: (r["output"], r["status"], r["score"]) for r in rows}
        with (out / "results.csv").open(encoding="utf-8", newline="") as f:
            order = [(r["prompt"], int(r["test_index"])) for r in csv.DictReader(f)]
        prompts = list(dict.fromkeys(p for p, _ in order))
        assert order == [(p, t) for t in range(4) for p in prompts]  # suite order, not run order
        manifest = json.loads((out / "manifest.json").read_text())
        assert (
            manifest["models"][0]["generation"]["cells"] == 6
        )  # the choice cells generate nothing
    assert outputs["1"] == outputs["4"]


def test_parallel_is_not_part_of_the_cache_key(project: Project, cli: Cli) -> None:
    first = project.write("evals/p1.yaml", _suite("1"))
    assert cli("run", first, "-o", project.root / "a").code in (0, 100)
    second = project.write("evals/p4.yaml", _suite("4"))
    assert cli("run", second, "-o", project.root / "b").code in (0, 100)
    assert all(r["cached"] for r in _rows(project.root / "b"))


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_parallel_must_be_auto_or_a_small_number(project: Project, cli: Cli, value: str) -> None:
    suite = project.write(
        "evals/bad.yaml", f'prompts: ["x"]\nmodels: [{{path: "fake://echo", parallel: {value}}}]\n'
    )
    result = cli("validate", suite)
    # One line, naming the field once with both allowed forms (a union fails per member).
    assert result.code == 2 and "parallel" in result.err and result.err.count("\n") == 1
    if value == "many":
        assert "integer" in result.err and "'auto'" in result.err
