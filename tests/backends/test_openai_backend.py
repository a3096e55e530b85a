"""The OpenAI-compatible server backend (provider: openai).

Two halves: a small scripted HTTP server inside the test (retries, 429 backoff, 5xx, timeouts, a
dead server, routing, the cache key, choice scoring, embeddings; milliseconds, no model), and a
real one, `python -m llama_cpp.server` on the bundled SmolLM2, whose outputs are compared with the
in-process backend's at temperature 0 (marked `model`: CI runs it, it never skips there).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CliResult, Project

from promptlab.backends import CellError, GenRequest, LoadSettings, Sampling
from promptlab.backends import openai as oa
from promptlab.backends import server as server_mod
from promptlab.backends.server import ServerSpec
from promptlab.errors import BackendError
from promptlab.models import BUNDLED

Reply = tuple[int, dict[str, str], Any]  # status, headers, JSON body
SETTINGS = LoadSettings(0, 2048, 512, 1, 1, False, 0)
GREEDY = Sampling(0.0, 0.95, 40, 0.05, 16, (), 0, 1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def completion(text: str) -> dict[str, Any]:
    return {
        "choices": [{"text": text, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": len(text.split())},
    }


def default_reply(route: str, body: dict[str, Any]) -> Reply:
    if route == "/v1/completions":
        return 200, {}, completion(f"out:{body['prompt']}")
    if route == "/v1/chat/completions":
        last = body["messages"][-1]["content"]
        return (
            200,
            {},
            {
                "choices": [{"message": {"role": "assistant", "content": f"chat:{last}"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            },
        )
    return 404, {}, {"error": {"message": f"no route {route}"}}


@dataclass
class Scripted:
    """An OpenAI-ish server: `reply(route, body)` answers each POST (after `delay` seconds); every
    request is recorded; `models` is what GET /v1/models lists (None: 404)."""

    url: str = ""
    models: list[dict[str, Any]] | None = field(
        default_factory=lambda: [{"id": "m", "owned_by": "t"}]
    )
    reply: Callable[[str, dict[str, Any]], Reply] = default_reply
    delay: float = 0.0
    posts: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    gets: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def routes(self) -> list[str]:
        return [route for route, _, _ in self.posts]


@pytest.fixture
def server() -> Iterator[Scripted]:
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.gets += 1
            if self.path == "/v1/models" and state.models is not None:
                self._send(200, {}, {"object": "list", "data": state.models})
            else:
                self._send(404, {}, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with state.lock:
                state.posts.append((self.path, body, dict(self.headers)))
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if state.delay:
                    time.sleep(state.delay)
                status, headers, reply = state.reply(self.path, body)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(status, headers, reply)  # unless the client timed out and left
            finally:
                with state.lock:
                    state.in_flight -= 1

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "BACKOFF_S", 0.01)


def backend(url: str, **kw: Any) -> oa.OpenAIBackend:
    spec = ServerSpec(label="m", base_url=url, model="m", **kw)
    return oa.OpenAIBackend(spec, SETTINGS, embedding=kw.pop("embedding", False))


def server_suite(project: Project, url: str, model: str = "", extra: str = "") -> Path:
    project.write(
        "chat.yaml",
        """
        - role: system
          content: Be brief.
        - role: user
          content: "Capital of {{ country }}?"
        """,
    )
    return project.write(
        "suite.yaml",
        f"""
        prompts:
          - "Q: capital of {{{{ country }}}}?\\nA:"
          - id: file://chat.yaml
            label: chat
        models:
          - provider: openai
            base_url: {url}
            model: m
        {model}
        params: {{temperature: 0, max_tokens: 8, stop: ["\\n"], seed: 7}}
        tests:
          - vars: {{country: France}}
            assert: [{{type: icontains, value: France}}]
        {extra}
        """,
    )


def rows(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


# --- HTTP behaviour -----------------------------------------------------------------------------


def test_retries_5xx_then_succeeds(server: Scripted) -> None:
    answers = iter([(503, {}, {"error": "loading"}), (502, {}, {"error": "bad gateway"})])
    server.reply = lambda route, body: next(answers, None) or default_reply(route, body)
    gen = backend(server.url).generate("hi", True, GREEDY)
    assert gen.text == "out:hi"
    assert server.routes() == ["/v1/completions"] * 3


def test_429_honours_retry_after(server: Scripted) -> None:
    answers = iter([(429, {"Retry-After": "1"}, {"error": "slow down"})])
    server.reply = lambda route, body: next(answers, None) or default_reply(route, body)
    start = time.perf_counter()
    gen = backend(server.url).generate("hi", True, GREEDY)
    waited = time.perf_counter() - start
    assert gen.text == "out:hi"
    # The backoff alone would be 0.01 s here: the second try waited for the server's second.
    assert waited >= 0.95, waited
    assert len(server.posts) == 2


def test_retry_after_as_http_date() -> None:
    future = time.time() + 30
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(future))
    response = httpx.Response(429, headers={"Retry-After": stamp})
    assert 25 < (oa.retry_after(response) or 0) <= 30
    assert oa.retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None


def test_5xx_that_outlives_the_retries_is_the_cells_error(server: Scripted) -> None:
    server.reply = lambda route, body: (500, {}, {"error": {"message": "kv cache full"}})
    with pytest.raises(CellError, match=r"HTTP 500\): kv cache full"):
        backend(server.url, retries=2).generate("hi", True, GREEDY)
    assert len(server.posts) == 3  # one try and two retries


def test_400_is_not_retried(server: Scripted) -> None:
    server.reply = lambda route, body: (400, {}, {"error": {"message": "grammar parse error"}})
    with pytest.raises(CellError, match="grammar parse error"):
        backend(server.url).generate("hi", True, GREEDY)
    assert len(server.posts) == 1


def test_timeout_is_retried_then_reported(server: Scripted) -> None:
    server.delay = 0.5
    with pytest.raises(CellError, match=r"no answer within 0.1 s .*2 tries.*raise timeout:"):
        backend(server.url, timeout=0.1, retries=1).generate("hi", True, GREEDY)
    assert len(server.posts) == 2


def test_dead_server_is_one_line_naming_model_and_url(
    project: Project, cli: Callable[..., CliResult]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    suite = server_suite(project, url)
    result = cli("run", suite, "-o", "out")
    assert result.code == 1, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.err
    assert "model 'm' (m at " + url + "): cannot reach the server (ConnectError" in lines[0]
    assert "check that the server is running" in lines[0]
    assert "Traceback" not in result.err


def test_unauthorized_names_api_key_env(server: Scripted) -> None:
    server.reply = lambda route, body: (401, {}, {"error": "bad key"})
    with pytest.raises(BackendError, match=r"refused the API key.*api_key_env"):
        backend(server.url, api_key="sk-1").generate("hi", True, GREEDY)
    assert server.posts[0][2]["Authorization"] == "Bearer sk-1"


def test_requests_go_out_concurrently_up_to_the_limit(server: Scripted) -> None:
    server.delay = 0.3
    b = backend(server.url, concurrency=3)
    reqs = [GenRequest(f"p{i}", True, GREEDY, tag=i) for i in range(7)]
    start = time.perf_counter()
    results = list(b.generate_batch(reqs))
    elapsed = time.perf_counter() - start
    assert sorted(r.tag for r, _ in results) == list(range(7))
    assert all(g.text == f"out:p{r.tag}" for r, g in results if not isinstance(g, CellError))
    assert server.max_in_flight == 3
    assert elapsed < 7 * 0.3  # not one at a time


def test_server_that_does_not_serve_the_model(server: Scripted) -> None:
    server.models = [{"id": "llama3:8b"}, {"id": "qwen"}]
    with pytest.raises(BackendError, match=r"does not serve model 'm'; it lists: llama3:8b, qwen"):
        backend(server.url)


# --- the payload ---------------------------------------------------------------------------------


def test_routing_and_payload_through_a_run(
    server: Scripted, project: Project, cli: Callable[..., CliResult]
) -> None:
    suite = server_suite(project, server.url)
    result = cli("run", suite, "-o", "out")
    assert result.code == 0, result.err
    by_route = {route: body for route, body, _ in server.posts}
    plain = by_route["/v1/completions"]
    assert plain["prompt"] == "Q: capital of France?\nA:"  # promptlab's text, exactly
    assert {k: plain[k] for k in ("model", "temperature", "max_tokens", "stop", "seed")} == {
        "model": "m",
        "temperature": 0.0,
        "max_tokens": 8,
        "stop": ["\n"],
        "seed": 7,
    }
    chat = by_route["/v1/chat/completions"]
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    out = {r["prompt"]: r for r in rows(project.root / "out")}
    assert out["chat"]["output"] == "chat:Capital of France?"
    assert json.loads(out["chat"]["rendered_prompt"]) == chat["messages"]
    manifest = json.loads((project.root / "out" / "manifest.json").read_text())
    runtime = manifest["models"][0]["runtime"]
    assert runtime["backend"] == "openai"
    assert runtime["server_model"] == {"id": "m", "owned_by": "t"}


def test_grammar_and_logprobs_are_sent_and_read(server: Scripted) -> None:
    def reply(route: str, body: dict[str, Any]) -> Reply:
        if route == "/v1/completions":
            data = completion(" Paris")
            data["choices"][0]["logprobs"] = {
                "tokens": [" Par", "is"],
                "token_logprobs": [-0.5, -0.1],
                "top_logprobs": [{" Par": -0.5, " Lon": -1.5, " Rom": -2.0}, {"is": -0.1}],
            }
            return 200, {}, data
        return (
            200,
            {},
            {
                "choices": [
                    {
                        "message": {"content": "Paris"},
                        "logprobs": {
                            "content": [
                                {
                                    "token": "Paris",
                                    "logprob": -0.2,
                                    "top_logprobs": [
                                        {"token": "Paris", "logprob": -0.2},
                                        {"token": "Lyon", "logprob": -3.0},
                                    ],
                                }
                            ]
                        },
                    }
                ]
            },
        )

    server.reply = reply
    b = backend(server.url)
    gen = b.generate("Q", True, GREEDY, grammar='root ::= "Paris"', logprobs=2)
    assert server.posts[0][1]["grammar"] == 'root ::= "Paris"'
    assert server.posts[0][1]["logprobs"] == 2
    assert gen.tokens is not None
    assert [(t.text, t.logprob) for t in gen.tokens] == [(" Par", -0.5), ("is", -0.1)]
    assert gen.tokens[0].top == ((" Par", -0.5), (" Lon", -1.5))  # best first, k of them
    chat_req = GenRequest("[]", False, GREEDY, logprobs=1, messages=(("user", "Q"),))
    ((_, chat_gen),) = list(b.generate_batch([chat_req]))
    assert not isinstance(chat_gen, CellError)
    assert server.posts[1][1]["logprobs"] is True and server.posts[1][1]["top_logprobs"] == 1
    assert chat_gen.tokens is not None
    assert chat_gen.tokens[0].top == (("Paris", -0.2),)


# --- the cache -----------------------------------------------------------------------------------


def test_rerun_is_served_from_the_cache_and_the_key_holds_no_api_key(
    server: Scripted,
    project: Project,
    cli: Callable[..., CliResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OA_TEST_KEY", "sk-secret-123")
    suite = server_suite(project, server.url)
    text = suite.read_text().replace("model: m\n", "model: m\n    api_key_env: OA_TEST_KEY\n")
    suite.write_text(text)
    assert cli("run", suite, "-o", "a").code == 0
    posts = len(server.posts)
    assert posts == 2
    assert server.posts[0][2]["Authorization"] == "Bearer sk-secret-123"
    second = cli("run", suite, "-o", "b")
    assert second.code == 0
    assert len(server.posts) == posts  # nothing generated again
    assert all(r["cached"] for r in rows(project.root / "b"))
    # Another model behind the same URL and name is another key.
    server.models = [{"id": "m", "owned_by": "someone-else"}]
    assert cli("run", suite, "-o", "c").code == 0
    assert len(server.posts) == posts + 2
    stored = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert b"sk-secret" not in stored
    for folder in ("a", "b", "c"):
        assert "sk-secret" not in (project.root / folder / "manifest.json").read_text()


def test_unidentified_server_results_are_not_cached(
    server: Scripted, project: Project, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    server.models = None  # GET /v1/models answers 404: nothing says which model this is
    suite = server_suite(project, server.url)
    assert cli("run", suite, "-o", "a").code == 0
    assert cli("run", suite, "-o", "b").code == 0
    assert len(server.posts) == 4
    assert not any(r["cached"] for r in rows(project.root / "b"))
    db = next((tmp_path / "cache").rglob("*.sqlite*"), None)
    if db is not None:  # no generate entry was written for this model
        with sqlite3.connect(db) as conn:
            tables = [
                t for (t,) in conn.execute("select name from sqlite_master where type='table'")
            ]
            assert all(conn.execute(f"select count(*) from {t}").fetchone()[0] == 0 for t in tables)


# --- suite schema ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{provider: openai, base_url: http://x/v1, model: m, n_gpu_layers: -1}",
            "models[0].n_gpu_layers: 'n_gpu_layers' is a llama.cpp setting of in-process models",
        ),
        (
            "{provider: openai, base_url: http://x/v1, model: m, parallel: 4}",
            "models[0].parallel: 'parallel' is a llama.cpp setting",
        ),
        (
            "{provider: openai, model: m}",
            "models[0].base_url: missing required key; provider: openai needs base_url:",
        ),
        (
            "{provider: openai, base_url: http://x/v1}",
            "models[0].model: missing required key; provider: openai needs model:",
        ),
        (
            "{provider: openai, base_url: x/v1, model: m}",
            "models[0].base_url: base_url must start with http:// or https://",
        ),
        (
            "{path: smollm2, base_url: http://x/v1}",
            "models[0].base_url: 'base_url' is a setting of server models; add provider: openai",
        ),
        (
            "{provider: openai, base_url: http://x/v1, model: m, path: smollm2}",
            "models[0].path: 'path' is a llama.cpp setting",
        ),
        ("{label: x}", "models[0].path: missing required key; a local model needs path:"),
        (
            "{provider: openai, base_url: http://x/v1, model: m, api_key_env: OA_NOT_SET_ANYWHERE}",
            "api_key_env: environment variable OA_NOT_SET_ANYWHERE is not set",
        ),
        (
            "{provider: openai, base_url: http://x/v1, model: m, endpoint: chat, chat_template: x}",
            "chat_template renders prompts here for the completion endpoint, but endpoint is chat",
        ),
    ],
)
def test_bad_server_entries_are_one_line_errors(
    project: Project, cli: Callable[..., CliResult], entry: str, expected: str
) -> None:
    suite = project.write(
        "s.yaml",
        f"""
        prompts: ["hi"]
        models:
          - {entry}
        """,
    )
    result = cli("validate", suite)
    assert result.code == 2, result.out + result.err
    assert expected in result.err, result.err
    assert "s.yaml:3" in result.err  # the line of the entry
    assert "Traceback" not in result.err


def test_roles_on_the_completion_endpoint_are_refused(
    server: Scripted, project: Project, cli: Callable[..., CliResult]
) -> None:
    suite = server_suite(project, server.url)
    suite.write_text(
        suite.read_text().replace("model: m\n", "model: m\n    endpoint: completion\n")
    )
    result = cli("validate", suite)
    assert result.code == 2
    assert "has chat roles but model 'm'" in result.err and "endpoint: auto or chat" in result.err
    assert server.posts == [] and server.gets == 0  # validate never contacts the server


# --- choices and embeddings --------------------------------------------------------------------


def echo_reply(aligned: bool) -> Callable[[str, dict[str, Any]], Reply]:
    """Echo logprobs with one token per character. Aligned: digits, commas and spaces are
    near-certain, letters of "paris" likely, the rest unlikely. Shifted: everything unlikely,
    as a server scoring each token as its own successor answers."""

    def lp(ch: str) -> float:
        if not aligned:
            return -12.0
        if ch in "0123456789, ":
            return -0.05
        return -0.1 if ch.lower() in "paris" else -2.0

    def reply(route: str, body: dict[str, Any]) -> Reply:
        assert body["echo"] is True and body["max_tokens"] == 1
        text = body["prompt"] + "!"  # one generated token after the echo
        values: list[float | None] = [lp(c) for c in text]
        values[0] = None  # the OpenAI convention: the first token has no logprob
        return (
            200,
            {},
            {
                "choices": [
                    {
                        "text": text,
                        "logprobs": {
                            "tokens": list(text),
                            "text_offset": list(range(len(text))),
                            "token_logprobs": values,
                            "top_logprobs": [None] + [{"x": -0.1} for _ in text[1:]],
                        },
                    }
                ]
            },
        )

    return reply


def test_choice_scores_the_choice_tokens_from_echo(server: Scripted) -> None:
    server.reply = echo_reply(aligned=True)
    b = backend(server.url)
    paris, rome = b.score_choices("The capital is", True, [" Paris", " Rome"])
    assert (paris.n_tokens, rome.n_tokens) == (6, 5)  # every token covering the choice
    assert paris.logprob == pytest.approx(-0.05 + 5 * -0.1)
    assert rome.logprob == pytest.approx(-0.05 + -0.1 + 3 * -2.0)  # " ", r, then o, m, e
    assert not rome.is_greedy  # "x" at -0.1 beats its letters
    assert server.posts[0][1]["prompt"] == oa.PROBE_TEXT  # the self-test ran first, once
    assert len(server.posts) == 3


def test_choice_on_a_server_with_shifted_logprobs_is_refused(
    server: Scripted, project: Project, cli: Callable[..., CliResult]
) -> None:
    server.reply = echo_reply(aligned=False)
    suite = server_suite(
        project,
        server.url,
        extra="""  - vars: {country: Italy}
            assert: [{type: choice, value: Rome, choices: [Rome, Paris]}]""",
    )
    suite.write_text(suite.read_text().replace("  - id: file://chat.yaml\n    label: chat\n", ""))
    result = cli("run", suite, "-o", "out")
    assert result.code == 2, result.err
    assert (
        "suite.yaml:" in result.err and "choice needs prompt logprobs from model 'm'" in result.err
    )
    assert "not aligned with the prompt's tokens" in result.err
    assert not (project.root / "out" / "results.jsonl").exists() or not rows(project.root / "out")


def test_choice_on_a_chat_prompt_through_a_server_is_refused_before_running(
    server: Scripted, project: Project, cli: Callable[..., CliResult]
) -> None:
    suite = server_suite(
        project,
        server.url,
        extra="""  - vars: {country: Italy}
            assert: [{type: choice, value: Rome, choices: [Rome, Paris]}]""",
    )
    result = cli("validate", suite)
    assert result.code == 2
    assert "choice scores the exact prompt text, but prompt 'chat' goes to the chat endpoint" in (
        result.err
    )
    assert server.gets == 0


def test_embeddings_are_normalized(server: Scripted) -> None:
    def reply(route: str, body: dict[str, Any]) -> Reply:
        assert route == "/v1/embeddings"
        data = [{"index": i, "embedding": [3.0, 4.0 * i]} for i in range(len(body["input"]))]
        return 200, {}, {"data": list(reversed(data))}

    server.reply = reply
    b = oa.OpenAIBackend(
        ServerSpec(label="m", base_url=server.url, model="m"), SETTINGS, embedding=True
    )
    assert b.embed(["a", "b"]) == [[1.0, 0.0], [0.6, 0.8]]
    with pytest.raises(BackendError, match="not available in embedding mode"):
        b.generate("x", True, GREEDY)


def test_embeddings_refused_names_the_server_flag(server: Scripted) -> None:
    server.reply = lambda route, body: (500, {}, {"error": {"message": "needs embedding=True"}})
    b = oa.OpenAIBackend(
        ServerSpec(label="m", base_url=server.url, model="m", retries=0), SETTINGS, embedding=True
    )
    with pytest.raises(BackendError, match="--embedding true"):
        b.embed(["a"])


# --- a real server: llama-cpp-python's, on the bundled SmolLM2 --------------------------------


@dataclass
class RealServer:
    url: str
    log: Path


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    model = BUNDLED["smollm2"].locate()
    if model is None:
        pytest.fail("the bundled smollm2 is not installed (./dev setup installs it)")
    try:
        import uvicorn  # noqa: F401 - llama-cpp-python's [server] extra
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("llama-cpp-python's [server] extra is missing (pip install -e '.[dev]')")
        pytest.skip("llama-cpp-python's [server] extra is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield RealServer(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_subprocess(suite: Path, out: Path) -> subprocess.CompletedProcess[str]:
    # A subprocess, as in test_llama.py: a crash in llama.cpp fails one test, not the session.
    return subprocess.run(
        [sys.executable, "-m", "promptlab", "run", str(suite), "-o", str(out), "--no-cache"],
        cwd=suite.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


PLAIN_PROMPTS = """
  - raw: "Q: What is the capital of {{ country }}?\\nA:"
    label: qa
  - raw: "The capital of {{ country }} is"
    label: completion
"""
CHAT_PROMPT = """
  - id: file://chat.yaml
    label: chat
"""
COMMON = """
params: {temperature: 0, max_tokens: 10, logprobs: 2}
tests:
  - vars: {country: France}
"""


def by_cell(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["prompt"], r["test"]): r for r in rows(folder)}


@pytest.mark.model
def test_real_server_matches_in_process_at_temperature_0(
    real_server: RealServer, project: Project
) -> None:
    project.write(
        "chat.yaml",
        """
        - role: user
          content: "What is the capital of {{ country }}?"
        """,
    )
    # In-process, SmolLM2 two ways: the raw text (chat: false), which is what the completion
    # endpoint gets for a plain prompt, and with promptlab applying its chat template, which
    # is what the server does for the chat endpoint.
    raw = project.write(
        "raw.yaml",
        f"prompts:{PLAIN_PROMPTS}{COMMON}models: [{{path: smollm2, chat: false, n_threads: 1}}]\n",
    )
    chat = project.write(
        "chat_local.yaml",
        f"prompts:{CHAT_PROMPT}{COMMON}models: [{{path: smollm2, n_threads: 1}}]\n",
    )
    remote = project.write(
        "remote.yaml",
        f"prompts:{PLAIN_PROMPTS}{CHAT_PROMPT}{COMMON}"
        f"models: [{{provider: openai, base_url: {real_server.url}, model: smollm2, concurrency: 2}}]\n",
    )
    for suite in (raw, chat, remote):
        done = run_subprocess(suite, project.root / suite.stem)
        assert done.returncode == 0, done.stderr + real_server.log.read_text()[-2000:]
    local = by_cell(project.root / "raw") | by_cell(project.root / "chat_local")
    served = by_cell(project.root / "remote")
    assert set(served) == set(local) and len(served) == 3
    for key, row in served.items():
        mine = local[key]
        # Same text in, same greedy tokens out: the server is the same llama.cpp on the same
        # GGUF; for chat, its own rendering of the GGUF's chat template matches promptlab's.
        assert row["output"] == mine["output"], (key, row["output"], mine["output"])
        assert row["logprobs"]["tokens"] == mine["logprobs"]["tokens"], key
        # Rows keep 4 decimals: equal there, as the same engine on the same tokens gives.
        assert row["logprobs"]["logprobs"] == mine["logprobs"]["logprobs"], key
        assert row["completion_tokens"] == mine["completion_tokens"], key
    manifest = json.loads((project.root / "remote" / "manifest.json").read_text())
    assert manifest["models"][0]["runtime"]["server_model"] == {"id": "smollm2", "owned_by": "me"}


@pytest.mark.model
def test_real_server_refuses_choice_for_smollm2(real_server: RealServer, project: Project) -> None:
    """llama-cpp-python's server returns echo logprobs shifted by one token for a model without
    a BOS token (SmolLM2): each token is scored as the successor of itself. The self-test sees
    that, so choice is refused rather than scored wrong."""
    suite = project.write(
        "choice.yaml",
        f"""
        prompts: ["The capital of {{{{ country }}}} is"]
        models: [{{provider: openai, base_url: {real_server.url}, model: smollm2}}]
        tests:
          - vars: {{country: France}}
            assert: [{{type: choice, value: " Paris", choices: [" Paris", " Rome"]}}]
        """,
    )
    done = run_subprocess(suite, project.root / "out")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "choice needs prompt logprobs from model 'smollm2'" in done.stderr
    assert "not aligned with the prompt's tokens" in done.stderr
