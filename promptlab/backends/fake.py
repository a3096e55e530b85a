"""A deterministic backend for tests and benchmarks of everything around the model.

Model paths select the behaviour:
  fake://echo               reply with the last user message (or the raw prompt)
  fake://reply?text=Paris   always reply `text` (also under a grammar: tests control the output)
  fake://rules?file=x.json  reply with the value of the first key found in the prompt (the file
                            is relative to the suite and must lie inside its project)
Options (query string, combinable): sleep_ms=N (simulated latency), fail_on=WORD (a cell error when
the prompt contains WORD), interrupt_after=N (raise KeyboardInterrupt on call N+1, as Ctrl-C
would; generate and score_choices calls both count), load_error=1 (fail to load),
choice_bias=TEXT (score_choices: the choice equal to TEXT wins), crash_after=N (rules mode: the
first process to reach call N+1 creates RULES.crashed beside the rules file and exits at once, as
a killed Ray actor would; a process that finds that file there goes on), barrier=N (rules mode:
loading marks RULES.loaded-PID beside the rules file and waits, up to 60 s, until N processes
have, so N Ray actors enter service together and a test of how work spreads cannot race their
start-up). Tokens are
whitespace-separated words, so n_ctx and max_tokens behave like the real thing.

The other backend features, all deterministic:
- grammar: `check_grammar` refuses a grammar whose text contains "INVALID" (generate then raises
  CellError); any other grammar is accepted and does not change the output.
- logprobs=k: one TokenLogprob per whitespace token of the output. A token's text is the word with
  the whitespace before it (so the texts concatenate to the output, minus trailing whitespace),
  its logprob is -0.1 x len(word); `top` holds k entries, the chosen word first, then "word~1",
  "word~2", ... each 0.5 lower.
- score_choices: n_tokens = number of words in the choice. A choice that appears in the context
  as whole words (case-insensitive, surrounding whitespace ignored) gets logprob
  -0.1 x n_tokens and is_greedy True; any other gets -(1 + d + 0.1 x n_tokens), where d is the
  smallest character edit distance between the choice and a same-length run of context words
  (so near-misses beat unrelated choices, and every choice found in the context beats them). With choice_bias=TEXT, a choice equal to TEXT (same comparison) scores 0.0 and is
  greedy. An empty choice scores 0.0 with 0 tokens.
- measure (promptlab tune): no timing at all, invented speeds that depend only on the
  arguments: prompt tok/s = 100 x n_threads x n_batch / (n_batch + 64) (more threads and larger
  batches always help), generation tok/s = 20 x n_threads up to 2 threads and 40 - 5 x (t - 2)
  above (so 2 is the best generation thread count); the times are tokens / speed. It checks
  n_ctx and n_batch (at most the load setting) like the real backend.
- embed (only when opened with embedding=True): a 64-dimensional bag of characters and character
  bigrams of the lowercased text, hashed by code point, L2-normalized. Shared letters make
  similar sentences closer than unrelated ones; an empty text is the zero vector.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from promptlab import files
from promptlab.backends import (
    CellError,
    ChoiceScore,
    Generation,
    GenRequest,
    LoadSettings,
    RuntimeInfo,
    Sampling,
    TokenLogprob,
)
from promptlab.errors import BackendError, InputError

_EMBED_DIM = 64


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def confine_rules(spec: str, base: Path, root: Path, where: str) -> str:
    """`spec` with its rules file (relative to the suite's folder) checked by `files.confine` and
    named by its absolute path, so the backend reads only what the plan allowed."""
    url = urlparse(spec)
    query = parse_qs(url.query, keep_blank_values=True)
    if "file" not in query:
        return spec
    (path,) = files.resolve_ref(
        query["file"][-1], base=base, root=root, what="rules file", where=where, globs=False
    )
    query["file"] = [str(path.absolute())]
    return urlunparse(url._replace(query=urlencode(query, doseq=True)))


BARRIER_TIMEOUT_S = 60.0


def _wait_for_peers(spec: str, rules: Path, n: int) -> None:
    """Mark this process loaded beside the rules file, then wait until `n` processes have."""
    mark = rules.with_name(f"{rules.name}.loaded-{os.getpid()}")
    # Raw, like the crash marker: an empty file created beside the project's rules file; it
    # may exist already (this process opened a second backend on the same rules).
    mark.touch(exist_ok=True)
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while (seen := len(list(rules.parent.glob(f"{rules.name}.loaded-*")))) < n:
        if time.monotonic() > deadline:
            raise BackendError(
                f"{spec}: only {seen} of {n} processes loaded within {BARRIER_TIMEOUT_S:.0f} s",
                hint="barrier=N is for N Ray actors started together",
            )
        time.sleep(0.02)


class FakeBackend:
    def __init__(self, spec: str, settings: LoadSettings, *, embedding: bool = False) -> None:
        url = urlparse(spec)
        self.spec = spec
        self.mode = url.netloc or url.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.settings = settings
        self.embedding = embedding
        self.sleep_s = float(query.get("sleep_ms", 0)) / 1000
        self.fail_on = query.get("fail_on")
        self.reply = query.get("text", "")
        self.choice_bias = query.get("choice_bias")
        self.interrupt_after = int(query["interrupt_after"]) if "interrupt_after" in query else None
        self.crash_after = int(query["crash_after"]) if "crash_after" in query else None
        barrier = int(query.get("barrier", 0))
        self.crash_flag: Path | None = None
        self.calls = 0
        self.rules: dict[str, str] = {}
        if self.mode not in ("echo", "reply", "rules"):
            raise InputError(
                f"{spec}: unknown fake backend mode '{self.mode}'", hint="use echo, reply or rules"
            )
        if self.mode == "rules":
            if "file" not in query:
                raise InputError(f"{spec}: rules mode needs ?file=rules.json")
            try:
                self.rules = json.loads(files.read_text(Path(query["file"]), "rules file"))
            except ValueError as exc:
                raise InputError(f"{spec}: cannot read rules file: {exc}") from None
            # Beside the rules file's real path, which the plan confined to the project: a suite
            # cannot make this create a file anywhere else.
            rules = Path(query["file"]).resolve()
            self.crash_flag = rules.with_name(rules.name + ".crashed")
            if barrier:
                _wait_for_peers(spec, rules, barrier)
        elif self.crash_after is not None or barrier:
            raise InputError(
                f"{spec}: crash_after and barrier need rules mode",
                hint="use fake://rules?file=rules.json&crash_after=N (or &barrier=N)",
            )
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
                "embedding": embedding,
            },
        )

    def _require_mode(self, embedding: bool, what: str) -> None:
        if self.embedding == embedding:
            return
        if embedding:
            raise BackendError(
                f"{self.spec}: {what} needs the model opened in embedding mode",
                hint="open it with open_backend(path, settings, embedding=True)",
            )
        raise BackendError(
            f"{self.spec}: this model was opened in embedding mode, which cannot {what}",
            hint="open a second backend without embedding=True for generation and scoring",
        )

    def _begin_call(self, text: str, n_prompt: int) -> None:
        """What every generate/score call shares: interrupt, n_ctx, simulated failure, latency."""
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        if self.crash_after is not None and self.calls >= self.crash_after and self.crash_flag:
            # The one raw open outside files.py's door that writes: an empty marker, never over
            # an existing file.
            try:  # O_EXCL: of several processes, exactly one crashes
                os.close(os.open(self.crash_flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                self.crash_after = None
            else:
                os._exit(3)
        self.calls += 1
        if n_prompt >= self.settings.n_ctx:
            raise CellError(
                f"prompt is {n_prompt} tokens but n_ctx is {self.settings.n_ctx}",
                hint="raise n_ctx in models: or shorten the prompt",
            )
        if self.fail_on and self.fail_on in text:
            raise CellError(f"simulated failure: prompt contains {self.fail_on!r}")
        if self.sleep_s:
            time.sleep(self.sleep_s)

    def count_tokens(self, text: str, add_bos: bool) -> int:
        return len(text.split()) + (1 if add_bos else 0)

    def check_grammar(self, gbnf: str) -> str | None:
        return "simulated parse error: the grammar contains INVALID" if "INVALID" in gbnf else None

    def generate(
        self,
        text: str,
        add_bos: bool,
        sampling: Sampling,
        *,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        self._require_mode(False, "generate")
        started = time.perf_counter()
        n_prompt = self.count_tokens(text, add_bos)
        self._begin_call(text, n_prompt)
        if grammar is not None:
            problem = self.check_grammar(grammar)
            if problem is not None:
                raise CellError(f"llama.cpp refused the grammar: {problem}")
        if logprobs is not None and logprobs < 0:
            raise CellError(f"logprobs must be 0 or more, got {logprobs}")
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
        tokens = self._logprobs(out, logprobs) if logprobs is not None else None
        return Generation(
            out,
            n_prompt,
            len(out.split()),
            finish,
            prompt_eval_tokens=n_prompt,
            tokens=tokens,
            wall_ms=(time.perf_counter() - started) * 1000,
        )

    def generate_batch(
        self, requests: Sequence[GenRequest]
    ) -> Iterator[tuple[GenRequest, Generation | CellError]]:
        """Like the llama.cpp engine: up to `parallel` requests at once (1 when unset), each
        window's results yielded shortest output first, as continuous batching finishes them."""
        width = max(1, self.settings.parallel or 1)
        for start in range(0, len(requests), width):
            done: list[tuple[int, int, GenRequest, Generation | CellError]] = []
            for i, req in enumerate(requests[start : start + width]):
                try:
                    result: Generation | CellError = self.generate(
                        req.text,
                        req.add_bos,
                        req.sampling,
                        grammar=req.grammar,
                        logprobs=req.logprobs,
                    )
                except CellError as exc:
                    result = exc
                length = result.completion_tokens if isinstance(result, Generation) else -1
                done.append((length, i, req, result))
            for _, _, req, result in sorted(done, key=lambda d: (d[0], d[1])):
                yield req, result

    @staticmethod
    def _logprobs(out: str, k: int) -> list[TokenLogprob]:
        result: list[TokenLogprob] = []
        for piece in re.findall(r"\s*\S+", out):
            word = piece.strip()
            lp = -0.1 * len(word)
            top = [(piece, lp)] + [(f"{piece}~{i}", lp - 0.5 * i) for i in range(1, k)]
            result.append(TokenLogprob(piece, lp, tuple(top[:k])))
        return result

    def score_choices(
        self, context: str, add_bos: bool, choices: Sequence[str], *, reuse_prefix: bool = True
    ) -> list[ChoiceScore]:
        self._require_mode(False, "score choices")
        n_prompt = self.count_tokens(context, add_bos)
        longest = max((len(c.split()) for c in choices), default=0)
        self._begin_call(context, n_prompt + longest)
        ctx_lower = context.lower()
        ctx_words = ctx_lower.split()
        bias = self.choice_bias.strip().lower() if self.choice_bias is not None else None
        scores: list[ChoiceScore] = []
        for choice in choices:
            key = choice.strip().lower()
            n = len(key.split())
            if not key:
                scores.append(ChoiceScore(0.0, 0, True))
            elif bias is not None and key == bias:
                scores.append(ChoiceScore(0.0, n, True))
            elif re.search(rf"(?<!\w){re.escape(key)}(?!\w)", ctx_lower):
                scores.append(ChoiceScore(-0.1 * n, n, True))
            else:
                windows = [
                    " ".join(ctx_words[i : i + n]) for i in range(max(1, len(ctx_words) - n + 1))
                ]
                d = min(_edit_distance(key, w) for w in windows)
                scores.append(ChoiceScore(-(1.0 + d + 0.1 * n), n, False))
        return scores

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self._require_mode(True, "embed")
        out: list[list[float]] = []
        for text in texts:
            vec = [0.0] * _EMBED_DIM
            low = text.lower()
            for ch in low:
                vec[ord(ch) % _EMBED_DIM] += 1.0
            for a, b in itertools.pairwise(low):
                vec[(ord(a) * 31 + ord(b)) % _EMBED_DIM] += 0.5
            norm = math.sqrt(sum(v * v for v in vec))
            out.append([v / norm for v in vec] if norm > 0 else vec)
        return out

    def measure(
        self, prompt_tokens: int, gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        self._require_mode(False, "measure")
        if prompt_tokens < 1 or gen_tokens < 0:
            raise CellError("measure needs prompt_tokens >= 1 and gen_tokens >= 0")
        if prompt_tokens + gen_tokens >= self.settings.n_ctx:
            raise CellError(
                f"{prompt_tokens} prompt + {gen_tokens} generated tokens do not fit n_ctx "
                f"{self.settings.n_ctx}"
            )
        if not 1 <= n_batch <= self.settings.n_batch:
            raise CellError(f"n_batch must be 1..{self.settings.n_batch} here, got {n_batch}")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        pp_tps = 100.0 * n_threads * n_batch / (n_batch + 64)
        tg_tps = 20.0 * n_threads if n_threads <= 2 else 40.0 - 5.0 * (n_threads - 2)
        tg_tps = max(tg_tps, 1.0)
        return {
            "pp_tokens": float(prompt_tokens),
            "pp_ms": prompt_tokens / pp_tps * 1000,
            "pp_tps": pp_tps,
            "tg_tokens": float(gen_tokens),
            "tg_ms": gen_tokens / tg_tps * 1000 if gen_tokens else 0.0,
            "tg_tps": tg_tps if gen_tokens else 0.0,
        }

    def close(self) -> None:
        pass
