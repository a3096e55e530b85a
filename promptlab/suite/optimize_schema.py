"""The optimize: section of a suite (`promptlab optimize`): the search space and its settings.

A suite's own model (Suite.optimize), kept apart from schema.py, which it would push past 600
lines; `promptlab run` ignores the section.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from promptlab.suite.strict import Strict, file_field

OPTIMIZE_PARAMS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "repeat_penalty")


class DemoSpace(Strict):
    """Few-shot demos: k examples, in an order, drawn from a pool of tests."""

    var: str = Field(
        default="demos",
        description="Template variable that receives the demos, a list of mappings: each "
        "demo's vars plus `expected` (its equals/choice value)",
    )
    pool: str = Field(
        default="train",
        description="Where demos come from: train (the train split), marked (tests with "
        "metadata pool: true, kept out of the split) or file://demos.csv (a tests file)",
        json_schema_extra=file_field("demo pool file"),
    )
    k: int | list[int] = Field(
        default=[0, 2, 4], description="How many demos: one number, or the numbers to try"
    )
    sets: int = Field(
        default=8, ge=1, le=1000, description="Random ordered demo sets drawn to choose among"
    )


class InstructionSpace(Strict):
    """Instruction variants: yours, and rewrites that a model proposes."""

    var: str = Field(
        description="Template variable holding the instruction; its value in vars: is the original"
    )
    variants: list[str] = Field(default_factory=list, description="Alternatives you write")
    propose: int = Field(default=0, ge=0, le=50, description="Rewrites for the proposer to write")
    proposer: str | None = Field(
        default=None,
        description="Model that writes the rewrites (bundled alias or .gguf path); "
        "default: the model under test",
    )
    meta_prompt: str | None = Field(
        default=None,
        description="The proposer's prompt instead of the built-in one: file://x.j2 or inline "
        "Jinja; it gets `instruction` and `examples` (each with vars and expected)",
        json_schema_extra=file_field("meta prompt"),
    )


class SplitSpec(Strict):
    """Shares of the tests for train (demo pool), validation (racing) and held-out (the verdict)."""

    train: float = Field(default=0.2, ge=0, lt=1, allow_inf_nan=False)
    validation: float = Field(default=0.4, gt=0, lt=1, allow_inf_nan=False)
    held_out: float = Field(default=0.4, gt=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSpec:
        total = self.train + self.validation + self.held_out
        if abs(total - 1.0) > 1e-6:
            raise PydanticCustomError(
                "split_sum", "train + validation + held_out must be 1, got {t}", {"t": total}
            )
        return self


class OptimizeSpec(Strict):
    """The search space and settings of `promptlab optimize`."""

    prompt: str | None = Field(default=None, description="Label of the prompt to optimize")
    demos: DemoSpace | None = Field(default=None, description="Few-shot demos to choose")
    instructions: InstructionSpace | None = Field(default=None, description="Instructions to try")
    vars: dict[str, list[Any]] = Field(
        default_factory=dict, description="Template variables and the values to try for each"
    )
    params: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Generation settings and the values to try: " + ", ".join(OPTIMIZE_PARAMS),
    )
    split: SplitSpec = Field(default_factory=SplitSpec, description="How the tests are split")
    budget: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Model calls at most (--budget wins)"
    )
    minibatch: int = Field(
        default=8, ge=1, le=100_000, description="Validation tests in racing's first rung"
    )
    eta: int = Field(default=2, ge=2, le=10, description="Racing keeps the best 1/eta per rung")
    candidates: int = Field(default=24, ge=1, le=10_000, description="Candidates to try at most")
