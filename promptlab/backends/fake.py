"""A deterministic backend for tests and benchmarks of everything around the model.

Model paths select the behaviour:
  fake://echo               reply with the last user message (or the raw prompt)
  fake://reply?text=Paris   always reply `text`
  fake://rules?file=x.json  reply with the value of the first key found in the prompt
Options (query string, combinable): sleep_ms=N (simulated latency), fail_on=WORD (a cell error when
the prompt contains WORD), interrupt_after=N (raise KeyboardInterrupt on call N+1, as Ctrl-C
would), load_error=1 (fail to load). Tokens are whitespace-separated words, so
n_ctx and max_tokens behave like the real thing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from promptlab.backends import CellError, Generation, LoadSettings, RuntimeInfo, Sampling
from promptlab.errors import BackendError, InputError


class FakeBackend:
    def __init__(self, spec: str, settings: LoadSettings) -> None:
        url = urlparse(spec)
        self.mode = url.netloc or url.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.settings = settings
        self.sleep_s = float(query.get("sleep_ms", 0)) / 1000
        self.fail_on = query.get("fail_on")
        self.reply = query.get("text", "")
        self.interrupt_after = int(query["interrupt_after"]) if "interrupt_after" in query else None
        self.calls = 0
        self.rules: dict[str, str] = {}
        if self.mode not in ("echo", "reply", "rules"):
            raise InputError(
                f"{spec}: unknown fake backend mode '{self.mode}'", hint="use echo, reply or rules"
            )
        if self.mode == "rules":
            try:
                self.rules = json.loads(Path(query["file"]).read_text())
            except (KeyError, OSError, ValueError) as exc:
                raise InputError(f"{spec}: cannot read rules file: {exc}") from None
        if query.get("load_error"):
            raise BackendError(f"{spec}: simulated load failure")
        self.info = RuntimeInfo(
            backend="fake",
            facts={
                "gpu_offload_supported": False,
                "n_gpu_layers_requested": 0,
                "layers_offloaded": 0,
                "n_layer": 0,
                "device": "none",
                "engine_version": "fake",
            },
        )

    def count_tokens(self, text: str, add_bos: bool) -> int:
        return len(text.split()) + (1 if add_bos else 0)

    def generate(self, text: str, add_bos: bool, sampling: Sampling) -> Generation:
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        n_prompt = self.count_tokens(text, add_bos)
        if n_prompt >= self.settings.n_ctx:
            raise CellError(
                f"prompt is {n_prompt} tokens but n_ctx is {self.settings.n_ctx}",
                hint="raise n_ctx in models: or shorten the prompt",
            )
        if self.fail_on and self.fail_on in text:
            raise CellError(f"simulated failure: prompt contains {self.fail_on!r}")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.mode == "echo":
            out = text
        elif self.mode == "reply":
            out = self.reply
        else:
            out = next((v for k, v in self.rules.items() if k in text), "")
        finish = "stop"
        for stop in sampling.stop:
            if stop in out:
                out = out[: out.index(stop)]
        words = out.split()
        budget = min(sampling.max_tokens, self.settings.n_ctx - n_prompt)
        if len(words) > budget:
            out, finish = " ".join(words[:budget]), "length"
        return Generation(out, n_prompt, len(out.split()), finish, prompt_eval_tokens=n_prompt)

    def close(self) -> None:
        pass
