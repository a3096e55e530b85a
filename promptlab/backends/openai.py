"""The backend protocol over an OpenAI-compatible HTTP server (llama-server, llama-cpp-python's
server, Ollama, vLLM, LM Studio), with httpx.

- A request with `messages` goes to /chat/completions (the server applies its chat template),
  any other to /completions with the text exactly as promptlab rendered it.
- Up to `concurrency` requests are in flight at once. 429, 5xx, timeouts and connection errors
  are retried `retries` times with exponential backoff (Retry-After is honoured). A server that
  stays unreachable stops the run with one line naming the model and base_url; an HTTP error
  that outlives the retries, or any other 4xx, is that cell's error.
- Sampling goes out as llama.cpp's names (temperature, top_p, top_k, min_p, repeat_penalty, seed,
  stop); grammars and JSON schemas as `grammar` (GBNF), which llama-server and llama-cpp-python's
  server honour and others may ignore.
- Choice scoring needs prompt logprobs (/completions with echo and logprobs). A self-test on
  first use checks the server returns them, aligned with the tokens; otherwise it is refused.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

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
from promptlab.backends.server import (
    ServerSpec,
    backoff,
    check_listed,
    http_client,
    list_models,
    model_entry,
    unreachable,
)
from promptlab.errors import BackendError

# Retries wait server.backoff(n); a Retry-After header replaces that, up to MAX_RETRY_AFTER_S
# (a server asking for longer is treated as refusing).
MAX_RETRY_AFTER_S = 120.0
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

# The choice self-test: a counting sequence, which every language model continues with
# near-certainty. Correctly aligned prompt logprobs average well above PROBE_MIN_MEAN over its
# later tokens; logprobs shifted by one token (each token scored as the successor of itself, as
# llama-cpp-python's server does for models without a BOS token) average far below it.
PROBE_TEXT = ", ".join(str(i) for i in range(1, 25))
PROBE_SKIP = 6  # the first tokens are not yet predictable
PROBE_MIN_MEAN = -3.0


class _Refused(Exception):
    """The server answered with an HTTP error that is final for this request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def retry_after(response: httpx.Response) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            err = err.get("message", err)
        return " ".join(str(err).split())[:300]
    return str(body)[:200]


class OpenAIBackend:
    def __init__(
        self, spec: ServerSpec, settings: LoadSettings, *, embedding: bool = False
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.embedding = embedding
        self.client = http_client(spec)
        self._choice_problem: str | None = None
        self._choice_checked = False
        self._lock = threading.Lock()
        try:
            entries = list_models(spec)
            check_listed(spec, entries)
        except BaseException:
            self.client.close()
            raise
        entry = model_entry(spec, entries)
        self.info = RuntimeInfo(
            backend="openai",
            facts={
                "base_url": spec.base_url,
                "model": spec.model,
                "server_model": entry,
                "endpoint": spec.endpoint,
                "concurrency": spec.concurrency,
                "device": "server",
                "gpu_offload_supported": False,
                "engine_version": "openai-compatible server",
                "embedding": embedding,
                # Results are cached only when the server identifies the model (runner reads
                # this key): a server that does not list it could change models unseen.
                "batch_exact": entry is not None,
            },
        )

    # --- HTTP -------------------------------------------------------------------------------

    def _post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with retries. Raises BackendError when the server cannot be reached, _Refused for
        a final HTTP error, CellError for a timeout or an answer that is not JSON."""
        url = self.spec.url(route)
        attempt = 0
        while True:
            delay: float | None = None
            try:
                response = self.client.post(url, json=payload)
            except httpx.TimeoutException as exc:
                if attempt >= self.spec.retries:
                    raise CellError(
                        f"{self.spec.where()}: no answer within {self.spec.timeout:g} s "
                        f"({type(exc).__name__}, {attempt + 1} tries)",
                        hint="raise timeout: on the model, or lower max_tokens",
                    ) from None
            except httpx.TransportError as exc:
                if attempt >= self.spec.retries:
                    raise unreachable(self.spec, exc) from None
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        raise CellError(
                            f"{self.spec.where()}: {route} answered with something that is not JSON"
                        ) from None
                    if not isinstance(body, dict):
                        raise CellError(f"{self.spec.where()}: {route} answered {str(body)[:80]!r}")
                    return body
                if response.status_code in (401, 403):
                    raise BackendError(
                        f"{self.spec.where()}: the server refused the API key (HTTP {response.status_code})",
                        hint="set api_key_env: to the environment variable that holds the key",
                    )
                if response.status_code == 404 and "model" not in _error_message(response).lower():
                    raise BackendError(
                        f"{self.spec.where()}: the server has no {url} (HTTP 404)",
                        hint="check base_url (the API root, usually ending in /v1) and endpoint:",
                    )
                if response.status_code not in RETRY_STATUS or attempt >= self.spec.retries:
                    raise _Refused(response.status_code, _error_message(response))
                delay = retry_after(response)
                if delay is not None and delay > MAX_RETRY_AFTER_S:
                    raise _Refused(
                        response.status_code,
                        f"{_error_message(response)} (Retry-After {delay:.0f} s)",
                    )
            if delay is None:
                delay = backoff(attempt)
            time.sleep(delay)
            attempt += 1

    def _cell_post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._post(route, payload)
        except _Refused as exc:
            raise CellError(
                f"server refused the request (HTTP {exc.status}): {exc.message}"
            ) from None

    # --- generation ---------------------------------------------------------------------------

    def _sampling(self, sampling: Sampling) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.spec.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
        }
        if sampling.stop:
            out["stop"] = list(sampling.stop)
        return out

    def _require_mode(self, embedding: bool, what: str) -> None:
        if self.embedding != embedding:
            raise BackendError(
                f"{self.spec.where()}: {what} is not available in "
                f"{'embedding' if self.embedding else 'generation'} mode"
            )

    def generate(
        self,
        text: str,
        add_bos: bool,
        sampling: Sampling,
        *,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        return self._generate(GenRequest(text, add_bos, sampling, grammar, logprobs))

    def _generate(self, request: GenRequest) -> Generation:
        self._require_mode(False, "generation")
        payload = self._sampling(request.sampling)
        if request.grammar is not None:
            payload["grammar"] = request.grammar
        chat = request.messages is not None
        if chat:
            assert request.messages is not None
            payload["messages"] = [{"role": r, "content": c} for r, c in request.messages]
            if request.logprobs is not None:
                payload["logprobs"] = True
                payload["top_logprobs"] = request.logprobs
        else:
            payload["prompt"] = request.text
            if request.logprobs is not None:
                payload["logprobs"] = request.logprobs
        started = time.perf_counter()
        body = self._cell_post("chat/completions" if chat else "completions", payload)
        wall_ms = (time.perf_counter() - started) * 1000
        try:
            choice = body["choices"][0]
            out = choice["message"].get("content") or "" if chat else choice["text"]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise CellError(
                f"{self.spec.where()}: the answer has no choices[0] text: {str(body)[:120]}"
            ) from None
        usage = body.get("usage") or {}
        timings = body.get("timings") or {}  # llama-server's own engine times
        tokens = None
        if request.logprobs is not None:
            tokens = (
                _chat_logprobs(choice, request.logprobs)
                if chat
                else _completion_logprobs(choice, request.logprobs)
            )
        return Generation(
            str(out),
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or (len(tokens) if tokens else 0)),
            str(choice.get("finish_reason") or "stop"),
            prompt_eval_tokens=timings.get("prompt_n"),
            prompt_eval_ms=timings.get("prompt_ms"),
            eval_ms=timings.get("predicted_ms"),
            tokens=tokens,
            wall_ms=wall_ms,
        )

    def generate_batch(
        self, requests: Sequence[GenRequest]
    ) -> Iterator[tuple[GenRequest, Generation | CellError]]:
        """Up to `concurrency` requests in flight; results in the order they finish."""
        pool = ThreadPoolExecutor(
            max_workers=self.spec.concurrency, thread_name_prefix="promptlab-http"
        )
        pending: dict[Future[Generation], GenRequest] = {}
        todo = iter(requests)
        try:
            while True:
                while len(pending) < self.spec.concurrency:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    pending[pool.submit(self._generate, nxt)] = nxt
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    request = pending.pop(future)
                    try:
                        yield request, future.result()
                    except CellError as exc:
                        yield request, exc
        finally:
            # On an error or Ctrl-C: send nothing more; requests in flight end by their timeout.
            pool.shutdown(wait=False, cancel_futures=True)

    # --- choices ---------------------------------------------------------------------------

    def _echo(self, text: str) -> dict[str, Any]:
        payload = {
            "model": self.spec.model,
            "prompt": text,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        return self._post("completions", payload)

    def choice_problem(self) -> str | None:
        """None when the server returns prompt logprobs aligned with the prompt's tokens (checked
        once, on first use), else why choice scoring is refused."""
        with self._lock:
            if not self._choice_checked:
                self._choice_problem = self._probe()
                self._choice_checked = True
            return self._choice_problem

    def _probe(self) -> str | None:
        try:
            body = self._echo(PROBE_TEXT)
        except (_Refused, CellError) as exc:
            return f"a completion with echo and logprobs failed ({exc})"
        lp = _echo_logprobs(body)
        if lp is None:
            return "the server returns no prompt logprobs (completion echo + logprobs)"
        offsets, values, _tops = lp
        prompt_values = [v for o, v in zip(offsets, values, strict=True) if o < len(PROBE_TEXT)]
        known = [v for v in prompt_values[PROBE_SKIP:] if v is not None]
        if len(known) < 10:
            return "the server's echo covers too few prompt tokens with logprobs"
        mean = sum(known) / len(known)
        if mean < PROBE_MIN_MEAN:
            return (
                f"the server's prompt logprobs are not aligned with the prompt's tokens (a "
                f"counting sequence averages {mean:.1f} per token; llama-cpp-python's server shifts "
                "them by one token for models without a BOS token)"
            )
        return None

    def score_choices(
        self, context: str, add_bos: bool, choices: Sequence[str], *, reuse_prefix: bool = True
    ) -> list[ChoiceScore]:
        """Each choice's tokens are those of `context + choice` (tokenized by the server) that
        cover any character of the choice; their logprobs come from completion echo."""
        self._require_mode(False, "choice scoring")
        problem = self.choice_problem()
        if problem is not None:
            raise BackendError(f"{self.spec.where()} cannot score choices: {problem}")
        with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            return list(pool.map(lambda c: self._score_one(context, c), choices))

    def _score_one(self, context: str, choice: str) -> ChoiceScore:
        if not choice:
            return ChoiceScore(0.0, 0, True)
        try:
            body = self._echo(context + choice)
        except _Refused as exc:
            raise CellError(
                f"server refused the request (HTTP {exc.status}): {exc.message}"
            ) from None
        lp = _echo_logprobs(body)
        if lp is None:
            raise CellError(f"{self.spec.where()}: the answer has no prompt logprobs")
        offsets, values, tops = lp
        start, end = len(context), len(context) + len(choice)
        total, n, greedy = 0.0, 0, True
        for i, offset in enumerate(offsets):
            stop = offsets[i + 1] if i + 1 < len(offsets) else math.inf
            if offset >= end or stop <= start:
                continue  # wholly context, or the generated token
            value = values[i]
            if value is None:
                raise CellError("the choice begins the text: there is no context to score it after")
            total += value
            n += 1
            greedy = greedy and value >= max(tops[i].values(), default=value) - 1e-6
        return ChoiceScore(total, n, greedy)

    # --- the rest of the protocol ----------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """base_url/embeddings, L2-normalized here (servers differ in whether they normalize)."""
        self._require_mode(True, "embedding")
        if not texts:
            return []
        try:
            body = self._post("embeddings", {"model": self.spec.model, "input": list(texts)})
        except _Refused as exc:
            raise BackendError(
                f"{self.spec.where()}: the server refused embeddings (HTTP {exc.status}): {exc.message}",
                hint="start it with embeddings on (llama-server --embeddings, llama_cpp.server --embedding true)",
            ) from None
        data = sorted(body.get("data") or [], key=lambda d: d.get("index", 0))
        if len(data) != len(texts):
            raise BackendError(
                f"{self.spec.where()}: asked for {len(texts)} embeddings, got {len(data)}"
            )
        out = []
        for item in data:
            vec = [float(x) for x in item.get("embedding") or []]
            norm = math.sqrt(sum(x * x for x in vec))
            out.append([x / norm for x in vec] if norm > 0 else vec)
        return out

    def count_tokens(self, text: str, add_bos: bool) -> int:
        raise BackendError(f"{self.spec.where()}: token counts need an in-process model")

    def check_grammar(self, gbnf: str) -> str | None:
        return None  # the server parses it per request; a refusal is that cell's error

    def measure(
        self, prompt_tokens: int, gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        raise BackendError(
            f"{self.spec.where()}: promptlab tune measures in-process llama.cpp, not a server",
            hint="tune the server with its own settings",
        )

    def close(self) -> None:
        self.client.close()


def _completion_logprobs(choice: dict[str, Any], k: int) -> list[TokenLogprob] | None:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict) or not isinstance(lp.get("tokens"), list):
        return None
    tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
    out = []
    for text, value, top in zip(lp["tokens"], lp.get("token_logprobs") or [], tops, strict=False):
        ranked = sorted((top or {}).items(), key=lambda kv: -kv[1])[:k]
        out.append(
            TokenLogprob(
                str(text), float(value or 0.0), tuple((str(t), float(v)) for t, v in ranked)
            )
        )
    return out


def _chat_logprobs(choice: dict[str, Any], k: int) -> list[TokenLogprob] | None:
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        return None
    out = []
    for item in content:
        top = [
            (str(t.get("token", "")), float(t.get("logprob", 0.0)))
            for t in item.get("top_logprobs") or []
        ]
        out.append(
            TokenLogprob(
                str(item.get("token", "")), float(item.get("logprob", 0.0)), tuple(top[:k])
            )
        )
    return out


def _echo_logprobs(
    body: dict[str, Any],
) -> tuple[list[int], list[float | None], list[dict[str, float]]] | None:
    """(text offsets, token logprobs, top logprobs) of an echo completion, or None if absent."""
    try:
        lp = body["choices"][0]["logprobs"]
        offsets = [int(o) for o in lp["text_offset"]]
        values = [None if v is None else float(v) for v in lp["token_logprobs"]]
        tops = [dict(t) if isinstance(t, dict) else {} for t in lp.get("top_logprobs") or []]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if len(offsets) != len(values):
        return None
    tops += [{}] * (len(values) - len(tops))
    return offsets, values, tops
