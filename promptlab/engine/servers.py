"""Run-time rules for server models (`provider: openai`) that the runner applies before any cell."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from promptlab.backends.server import ServerSpec, choice_problem
from promptlab.errors import InputError

if TYPE_CHECKING:
    from promptlab.engine.handles import ModelHandle
    from promptlab.plan import Cell


def require_choice_support(handle: ModelHandle, cells: Sequence[Cell]) -> None:
    """Refuse `choice` checks on a server that cannot score them (no prompt logprobs, or shifted
    ones; see backends/openai.py's self-test), naming the first such check and the model. Runs
    only when some cell has a choice check: it contacts the server."""
    check = next(
        (c for cell in cells for top in cell.checks for c in top.walk() if c.base == "choice"),
        None,
    )
    spec = handle.model.path
    if check is None or not isinstance(spec, ServerSpec):
        return
    problem = choice_problem(handle.get())
    if problem is not None:
        raise InputError(
            f"{check.where}: choice needs prompt logprobs from {spec.where()}, and it "
            f"cannot give them: {problem}",
            hint="score choices with an in-process model (path: ...), or serve the model "
            "where completion echo + logprobs work (e.g. vLLM)",
        )
