"""The strongest simple baseline: a bare llama-cpp-python loop over rendered prompts.

    python benchmarks/bare_loop.py CELLS.json OUT.json

CELLS.json is a list of {"text", "expected", "max_tokens", "stop", "model", "n_ctx",
"n_threads"} (bench_fewshot.py writes it from `promptlab render --json`). The loop sorts the
prompts by their text, so cells that share a prefix run back to back and llama-cpp-python's own
longest-common-prefix reuse keeps it in the KV cache, then calls plain `Llama.create_completion`
with greedy settings. It is timed as a whole process by the caller: its imports, its model load
and its loop, like promptlab. OUT.json gets each cell's output and whether it contains the
expected label (case-insensitive), the check the suite applies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from llama_cpp import Llama


def main() -> int:
    cells = json.loads(Path(sys.argv[1]).read_text())
    first = cells[0]
    llm = Llama(
        model_path=first["model"],
        n_ctx=first["n_ctx"],
        n_threads=first["n_threads"],
        n_threads_batch=first["n_threads"],
        n_batch=512,
        seed=0,
        verbose=False,
    )
    out = []
    for cell in sorted(cells, key=lambda c: c["text"]):
        r: Any = llm.create_completion(
            cell["text"],
            max_tokens=cell["max_tokens"],
            temperature=0.0,
            stop=cell["stop"] or None,
        )
        text = r["choices"][0]["text"]
        out.append(
            {"text": cell["text"], "output": text, "pass": cell["expected"].lower() in text.lower()}
        )
    Path(sys.argv[2]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
