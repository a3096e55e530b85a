"""promptlab: a command-line lab for prompt engineering on local quantized models.

The Python API (promptlab.api) is reached from here: `promptlab.run`, `promptlab.load_run`,
`promptlab.Run`, `promptlab.Comparison`. They load on first use, so `import promptlab` (which
the CLI does before anything else) imports neither pandas nor llama_cpp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Comparison", "Run", "__version__", "load_run", "run"]

if TYPE_CHECKING:
    from promptlab.api import Comparison, Run, load_run, run

_API = frozenset({"Comparison", "Run", "load_run", "run"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from promptlab import api  # noqa: PLC0415 - lazy, see the module docstring

        return getattr(api, name)
    raise AttributeError(f"module 'promptlab' has no attribute {name!r}")
