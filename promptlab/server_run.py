"""Run-time rules for server models (`provider: openai`) that the runner applies before any cell."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from promptlab.errors import InputError

if TYPE_CHECKING:
    from promptlab.plan import Cell
    from promptlab.runner import ModelHandle


def require_choice_support(handle: ModelHandle, cells: Sequence[Cell]) -> None:
    """Refuse `choice` checks on a server that cannot score them (no prompt logprobs, or shifted
    ones; see backends/openai.py's self-test), naming the first such check and the model. Runs
    only when some cell has a choice check: it contacts the server."""
    check = next(
        (c for cell in cells for top in cell.checks for c in top.walk() if c.base == "choice"),
        None,
    )
    if check is None:
        return
    from promptlab.backends.openai import OpenAIBackend  # noqa: PLC0415 - imports httpx

    backend = handle.get()
    if not isinstance(backend, OpenAIBackend):
        return
    problem = backend.choice_problem()
    if problem is not None:
        raise InputError(
            f"{check.where}: choice needs prompt logprobs from {backend.spec.where()}, and it "
            f"cannot give them: {problem}",
            hint="score choices with an in-process model (path: ...), or serve the model "
            "where completion echo + logprobs work (e.g. vLLM)",
        )
