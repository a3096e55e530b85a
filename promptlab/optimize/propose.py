"""Instruction rewrites proposed by a model, through a meta-prompt (built in, or the suite's).

The proposer sees the original instruction and a few train examples with their expected
answers (never validation or held-out tests, which decide). Each proposal is one generation
with its own seed (seed, seed+1, ...: the suite's repeat mechanism), so the proposals are
reproducible, cached like any cell, and counted in the budget.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2

from promptlab.consent import CodeMode
from promptlab.engine.runner import NoProgress, Stats, execute
from promptlab.engine.store import RunWriter, read_results, repair_results
from promptlab.optimize.evaluate import SharedModels
from promptlab.optimize.space import Space
from promptlab.plan import build_plan
from promptlab.suite import ModelDef, ModelSpec, Params, PromptDef, TestDef
from promptlab.templates import sha256_text

META_PROMPT = """\
You improve instructions for a language model.

Current instruction:
{{ instruction }}

Examples of the task and the answer expected for each:
{% for ex in examples %}
Example {{ loop.index }}: {% for k, v in ex.vars.items() %}{{ k }}: {{ v }}. {% endfor %}
Expected answer: {{ ex.expected }}
{% endfor %}
Write one better instruction for this task: clear, and exact about the form of the answer.
Reply with the new instruction only.
"""
MAX_EXAMPLES = 5
PROPOSAL_PARAMS = {"temperature": 0.8, "max_tokens": 96, "stop": ["\n\n"]}


def _clean(text: str) -> str | None:
    """The instruction in a proposer's reply: its first paragraph, unquoted; None if empty."""
    first = text.strip().split("\n\n")[0].strip()
    for prefix in ("New instruction:", "Instruction:"):
        if first.lower().startswith(prefix.lower()):
            first = first[len(prefix) :].strip()
    if len(first) >= 2 and first[0] == first[-1] and first[0] in "\"'`":
        first = first[1:-1].strip()
    return first[:600] or None


def propose(
    space: Space,
    folder: Path,
    *,
    models: SharedModels,
    code: CodeMode,
    cache: Any,
    seed: int,
    stats: Stats,
) -> tuple[list[str], int, list[dict[str, Any]]]:
    """(new instructions, calls made, the proposer's rows). Rows stored by an earlier session
    of this run (proposals/results.jsonl) are reused as they are."""
    inst = space.spec.instructions
    assert inst is not None and inst.propose > 0 and space.instructions
    out = folder / "proposals"
    rows: list[dict[str, Any]] = []
    if (out / "results.jsonl").exists():
        repair_results(out)
        rows = read_results(out)
    if len(rows) < inst.propose:
        rows = _generate(space, out, models=models, code=code, cache=cache, seed=seed, stats=stats)
    rows = sorted(rows, key=lambda r: int(r.get("repeat") or 0))[: inst.propose]
    found: list[str] = []
    for row in rows:
        text = _clean(str(row.get("output") or ""))
        if text is not None and text not in space.instructions and text not in found:
            found.append(text)
    return found, inst.propose, rows


def _generate(
    space: Space,
    out: Path,
    *,
    models: SharedModels,
    code: CodeMode,
    cache: Any,
    seed: int,
    stats: Stats,
) -> list[dict[str, Any]]:
    inst = space.spec.instructions
    assert inst is not None
    suite = space.suite
    if out.exists():
        (out / "results.jsonl").unlink(missing_ok=True)
    # Train tests only (or the demo pool): validation and held-out tests decide, so the
    # proposer must not see them.
    train = set(space.split.train)
    shown: list[dict[str, Any]] = [
        {
            "vars": {k: v for k, v in t.vars.items() if k not in space.controlled},
            "expected": space.split.strata.get(t.index),
        }
        for t in space.tests
        if t.index in train
    ] or [{"vars": d.vars, "expected": d.expected} for d in space.pool]
    examples = shown[:MAX_EXAMPLES]
    if suite.optimize is not None and suite.optimize.meta_prompt is not None:
        template: jinja2.Template = suite.optimize.meta_prompt
        source = "optimize.instructions.meta_prompt"
    else:
        template = suite.env.from_string(META_PROMPT, "the built-in meta-prompt")
        source = "built-in meta-prompt"
    prompt = PromptDef(
        "proposer",
        source,
        "text",
        [(None, template)],
        sha256_text(META_PROMPT),
        source,
        {"instruction", "examples"},
    )
    test = TestDef(
        0,
        "instruction proposals",
        {"instruction": space.instructions[0], "examples": examples},
        [],
        source,
    )
    models_def = suite.models
    if inst.proposer is not None:
        where = f"{suite.path}: optimize.instructions.proposer"
        models_def = [ModelDef("proposer", ModelSpec(path=inst.proposer), where)]
    params = Params.model_validate(
        {
            **suite.params.model_dump(),
            **PROPOSAL_PARAMS,
            "seed": seed,
            "grammar": None,
            "response_format": None,
        }
    )
    proposer_suite = replace(
        suite,
        prompts=[prompt],
        tests=[test],
        models=models_def,
        params=params,
        settings=[params],
        varied=[],
        repeat=inst.propose,
        notes=[],
    )
    plan = build_plan(proposer_suite, code=code)
    writer = RunWriter(out)
    try:
        execute(
            plan, writer, NoProgress(), lambda record: None, opener=models, cache=cache, stats=stats
        )
    finally:
        writer.close()
    return read_results(out)
