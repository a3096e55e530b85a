"""promptfoo providers that name a local model run that model (suite/providers.py).

`ollama:[chat:|completion:]NAME` runs in-process from a store laid out as Ollama lays it out;
`openai:…`/`localai:…` with a base URL run on that server; a provider's config becomes its
model's settings. Everything else is replaced by the default model, with a note saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backends.test_openai_backend import Scripted, server  # noqa: F401  (the scripted server)
from conftest import CliResult, Project
from model_stores import header_gguf, ollama_model

from promptlab.errors import InputError
from promptlab.models import BUNDLED, DEFAULT_MODEL
from promptlab.optimize.evaluate import suite_for
from promptlab.optimize.space import Candidate
from promptlab.plan import build_plan
from promptlab.suite import LoadedSuite, load_suite

Cli = Callable[..., CliResult]
SUITE = "promptfooconfig.yaml"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An Ollama models folder ($OLLAMA_MODELS) holding `tiny:latest` and `tiny:q4`."""
    root = tmp_path / "ollama-models"
    gguf = header_gguf(tmp_path / "tiny.gguf", chat_template="<|user|>{{ messages[0].content }}")
    for tag in ("latest", "q4"):
        ollama_model(root, "tiny", tag, gguf=gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


def load(project: Project, text: str) -> LoadedSuite:
    return load_suite(project.write(SUITE, text))


def bad(project: Project, text: str, *parts: str) -> None:
    with pytest.raises(InputError) as info:
        load(project, text)
    message = info.value.one_line()
    assert "\n" not in message
    for part in parts:
        assert part in message, message


def notes(suite: LoadedSuite) -> str:
    return " ".join(" ".join(suite.notes).split())


# --- Ollama -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ident", "path"),
    [
        ("ollama:chat:tiny", "ollama:tiny"),
        ("ollama:completion:tiny:q4", "ollama:tiny:q4"),
        ("ollama:tiny", "ollama:tiny"),
        ("ollama:tiny:q4", "ollama:tiny:q4"),
        ("ollama:chat:TINY:Q4", "ollama:TINY:Q4"),  # Ollama matches names case-insensitively
    ],
)
def test_ollama_ids_run_the_model_in_process(
    store: Path, project: Project, ident: str, path: str
) -> None:
    suite = load(project, f"prompts: [hi]\nproviders: [{ident}]\n")
    (model,) = suite.models
    assert (model.spec.path, model.spec.provider, model.spec.chat) == (path, "local", "auto")
    assert model.label == path.removeprefix("ollama:")
    assert f"providers: {ident} runs as the Ollama model" in notes(suite)
    assert "in-process" in notes(suite)
    assert DEFAULT_MODEL not in [m.spec.path for m in suite.models]


def test_ollama_config_becomes_settings_and_the_rest_is_named(
    store: Path, project: Project
) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - id: ollama:chat:tiny
            label: Tiny
            config:
              temperature: 0.7
              num_predict: 40
              top_k: 5
              top_p: 0.5
              min_p: 0.1
              repeat_penalty: 1.1
              seed: 3
              stop: "###"
              num_ctx: 1024
              num_batch: 64
              num_thread: 2
              num_gpu: 0
              mirostat: 1
              keep_alive: 5m
            prompts: [hi]
        """,
    )
    (model,) = suite.models
    assert model.label == "Tiny"
    assert model.params == {
        "temperature": 0.7,
        "max_tokens": 40,
        "top_k": 5,
        "top_p": 0.5,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
        "seed": 3,
        "stop": ["###"],
    }
    spec = model.spec
    assert (spec.n_ctx, spec.n_batch, spec.n_threads, spec.n_gpu_layers) == (1024, 64, 2, 0)
    text = notes(suite)
    assert (
        f"{project.root / SUITE}:5: providers[0].config: mirostat, keep_alive are ignored" in text
    )
    assert "a provider's prompts is ignored; every prompt runs on every model here" in text
    # The settings reach the cells: each of them samples as the provider said.
    (cell,) = build_plan(suite).cells
    assert cell.sampling is not None
    assert (cell.sampling.temperature, cell.sampling.max_tokens, cell.sampling.seed) == (0.7, 40, 3)
    assert cell.sampling.stop == ("###",)


def test_raw_completion_skips_the_chat_template(store: Path, project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - {id: "ollama:completion:tiny", label: raw, config: {raw: true}}
          - {id: "ollama:completion:tiny", label: templated, config: {raw: false}}
          - {id: "ollama:chat:tiny", label: chat, config: {raw: true}}
        """,
    )
    assert [m.spec.chat for m in suite.models] == [False, "auto", "auto"]
    assert "providers[2].config: raw is ignored" in notes(suite)  # /api/chat takes no raw
    texts = {c.model.label: c.text for c in build_plan(suite).cells}
    assert texts == {"raw": "hi", "templated": "<|user|>hi", "chat": "<|user|>hi"}


def test_each_provider_samples_with_its_own_config(store: Path, project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - {id: "ollama:chat:tiny", label: cold, config: {temperature: 0}}
          - {id: "ollama:chat:tiny:q4", label: warm, config: {temperature: 0.9, seed: 11}}
        params: {max_tokens: 12}
        """,
    )
    got = {
        c.model.label: (c.sampling.temperature, c.sampling.seed, c.sampling.max_tokens)
        for c in build_plan(suite).cells
        if c.sampling is not None
    }
    assert got == {"cold": (0.0, 0, 12), "warm": (0.9, 11, 12)}


def test_params_given_in_the_suite_win_with_a_note(store: Path, project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - {id: "ollama:chat:tiny", config: {temperature: 0.9, num_predict: 30}}
        params: {temperature: [0, 0.5]}
        """,
    )
    assert suite.models[0].params == {"max_tokens": 30}
    assert "ollama:chat:tiny's temperature from config: give way to params:" in notes(suite)
    cells = build_plan(suite).cells
    assert sorted(c.sampling.temperature for c in cells if c.sampling) == [0.0, 0.5]
    assert {c.sampling.max_tokens for c in cells if c.sampling} == {30}


def test_an_optimize_candidates_params_win_over_the_providers(
    store: Path, project: Project
) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - {id: "ollama:chat:tiny", config: {temperature: 0.9, seed: 4}}
        """,
    )
    cand = Candidate("c", {"t": 0}, {}, {"temperature": 0.2})
    (cell,) = build_plan(suite_for(suite, suite.prompts[0], cand, [0])).cells
    assert cell.sampling is not None
    assert (cell.sampling.temperature, cell.sampling.seed) == (0.2, 4)


def test_a_model_ollama_lacks_is_replaced_and_the_note_says_where_it_looked(
    store: Path, project: Project
) -> None:
    suite = load(project, "prompts: [hi]\nproviders: [ollama:chat:llama3.2, ollama:chat:tiny]\n")
    assert [m.spec.path for m in suite.models] == ["ollama:tiny", DEFAULT_MODEL]
    text = notes(suite)
    assert "ollama:chat:llama3.2 is ignored, running the local model smollm2 in its place" in text
    assert f"Ollama model llama3.2:latest is not in {store} (from OLLAMA_MODELS)" in text
    assert "`ollama pull llama3.2:latest` fetches it" in text


def test_without_an_ollama_folder_every_ollama_provider_is_replaced(
    tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    suite = load(project, "prompts: [hi]\nproviders: [ollama:chat:llama3]\n")
    assert [m.spec.path for m in suite.models] == [DEFAULT_MODEL]
    text = notes(suite)
    assert "providers: is ignored; running the local model smollm2 instead" in text
    assert f"ollama:chat:llama3: no Ollama models folder at {tmp_path / 'nowhere'}" in text


def test_ollama_embeddings_are_not_a_generation_model(store: Path, project: Project) -> None:
    suite = load(project, "prompts: [hi]\nproviders: [ollama:embeddings:tiny]\n")
    assert [m.spec.path for m in suite.models] == [DEFAULT_MODEL]
    assert "ollama:embeddings:tiny: an embedding model generates no text" in notes(suite)


# --- OpenAI-compatible servers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ident", "config", "expect"),
    [
        (
            "openai:chat:qwen",
            {"apiBaseUrl": "http://127.0.0.1:8080/v1"},
            ("http://127.0.0.1:8080/v1", "qwen", "chat"),
        ),
        (
            "openai:completion:qwen",
            {"apiBaseUrl": "http://127.0.0.1:8080/v1/"},
            ("http://127.0.0.1:8080/v1", "qwen", "completion"),
        ),
        # promptfoo: openai:NAME is the chat API, unless NAME is an OpenAI completion model
        ("openai:qwen", {"apiBaseUrl": "http://h:1/v1"}, ("http://h:1/v1", "qwen", "chat")),
        (
            "openai:gpt-3.5-turbo-instruct",
            {"apiBaseUrl": "http://h:1/v1"},
            ("http://h:1/v1", "gpt-3.5-turbo-instruct", "completion"),
        ),
        # promptfoo gives a bare host its /v1, and apiHost https://HOST/v1
        ("openai:chat:m", {"apiBaseUrl": "http://localhost:8080"}, ("http://localhost:8080/v1", "m", "chat")),
        ("openai:chat:m", {"apiHost": "box.lan:8443"}, ("https://box.lan:8443/v1", "m", "chat")),
        ("openai:chat:llama3.2:1b", {"apiBaseUrl": "http://h:1/v1"}, ("http://h:1/v1", "llama3.2:1b", "chat")),
        ("localai:chat:phi", {}, ("http://localhost:8080/v1", "phi", "chat")),
        ("localai:completion:phi", {"apiBaseUrl": "http://h:2/v1"}, ("http://h:2/v1", "phi", "completion")),
        ("localai:phi", {}, ("http://localhost:8080/v1", "phi", "chat")),
    ],
)  # fmt: skip
def test_server_providers_become_server_models(
    project: Project, ident: str, config: dict[str, Any], expect: tuple[str, str, str]
) -> None:
    body = {"prompts": ["hi"], "providers": [{"id": ident, "config": config}]}
    suite = load(project, json.dumps(body))
    (model,) = suite.models
    spec = model.spec
    assert spec.provider == "openai"
    assert (spec.base_url, spec.model, spec.endpoint) == expect
    assert model.label == expect[1]
    assert f"{ident} runs as model {expect[1]} at {expect[0]} ({expect[2]} endpoint)" in notes(
        suite
    )


def test_localai_base_url_from_the_environment(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALAI_BASE_URL", "http://gpu-box:9000/v1")
    (model,) = load(project, "prompts: [hi]\nproviders: [localai:phi]\n").models
    assert model.spec.base_url == "http://gpu-box:9000/v1"


def test_openai_config_keys(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - id: openai:chat:m
            label: local m
            config:
              apiBaseUrl: http://127.0.0.1:8080/v1
              apiKeyEnvar: MY_KEY
              temperature: 0.2
              max_completion_tokens: 50
              top_p: 0.9
              seed: 4
              stop: ["\\n\\n"]
              frequency_penalty: 0.5
              response_format: {type: json_object}
        """,
    )
    (model,) = suite.models
    assert model.label == "local m"
    assert model.spec.api_key_env == "MY_KEY"
    assert model.params == {
        "temperature": 0.2,
        "max_tokens": 50,
        "top_p": 0.9,
        "seed": 4,
        "stop": ["\n\n"],
    }
    assert "providers[0].config: frequency_penalty, response_format are ignored" in notes(suite)


@pytest.mark.parametrize(
    "ident",
    [
        "openai:gpt-4o",
        "openai:chat:gpt-4o-mini",
        "anthropic:messages:claude-opus-4-6",
        "file://p.py",
    ],
)
def test_cloud_providers_are_replaced_as_before(project: Project, ident: str) -> None:
    suite = load(project, f"prompts: [hi]\nproviders: ['{ident}']\n")
    assert [m.spec.path for m in suite.models] == [DEFAULT_MODEL]
    assert "providers: is ignored; running the local model smollm2 instead" in notes(suite)


def test_other_openai_apis_and_llama_are_replaced_with_the_reason(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - echo
          - {id: "openai:embedding:e", config: {apiBaseUrl: "http://h:1/v1"}}
          - {id: "openai:responses:r", config: {apiBaseUrl: "http://h:1/v1"}}
          - llama
        """,
    )
    assert [m.spec.path for m in suite.models] == ["fake://echo", DEFAULT_MODEL]
    text = notes(suite)
    assert "openai:embedding:e, openai:responses:r, llama are ignored" in text
    assert "openai:embedding:e: an embedding model generates no text" in text
    assert "openai:responses:r: promptlab's server models speak /chat/completions" in text
    assert "llama: promptfoo's llama provider calls llama-server's own /completion API" in text
    assert "{provider: openai, base_url: http://localhost:8080/v1" in text


def test_targets_and_the_map_form(store: Path, project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        targets:
          ollama:chat:tiny:
            label: T
            config: {temperature: 0.3}
        """,
    )
    (model,) = suite.models
    assert (model.label, model.spec.path, model.params) == (
        "T",
        "ollama:tiny",
        {"temperature": 0.3},
    )
    assert "targets: ollama:chat:tiny runs as the Ollama model tiny:latest" in notes(suite)


def test_models_and_model_override_still_win(store: Path, project: Project) -> None:
    text = "prompts: [hi]\nproviders: [ollama:chat:tiny]\n"
    suite = load(project, text + "models: [fake://echo]\n")
    assert [m.spec.path for m in suite.models] == ["fake://echo"]
    assert "providers: is ignored; running the local model echo instead" in notes(suite)
    override = load_suite(project.write(SUITE, text), model_override="fake://echo")
    assert [m.spec.path for m in override.models] == ["fake://echo"]
    assert "providers: is ignored; running the local model echo instead" in notes(override)


def test_a_graders_ollama_provider_names_the_model_not_the_api(
    store: Path, project: Project
) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        models: [fake://echo]
        tests:
          - assert:
              - {type: llm-rubric, value: ok, provider: "ollama:chat:tiny:q4"}
              - {type: similar, value: hi, provider: "ollama:embeddings:tiny"}
              - {type: llm-rubric, value: ok, provider: "ollama:tiny"}
        """,
    )
    providers = [c.extra.get("provider") for c in suite.tests[0].checks]
    assert providers == ["ollama:tiny:q4", "ollama:tiny", "ollama:tiny"]


# --- bad values: one line naming the file, line and field -------------------------------------


@pytest.mark.parametrize(
    ("providers", "parts"),
    [
        ("[{id: 5}]", (":2: providers[0].id: id must be text",)),
        ("[{label: x}]", (":2: providers[0]: a provider needs id:",)),
        ("[{label: x, config: {}}]", (":2: providers[0]: a provider needs id:",)),
        ("[[a]]", (":2: providers[0]: must be a provider id or a mapping with id:",)),
        ("7", (":2: providers: must be a provider id or a list",)),
        ("[{id: echo, label: [x]}]", ("providers[0].label: label must be text",)),
        ("[{id: 'openai:chat:m', config: 3}]", ("providers[0].config: config must be a mapping",)),
        (
            "[{id: 'openai:chat:m', config: {apiBaseUrl: 'localhost:8080'}}]",
            (":2: providers[0].config.apiBaseUrl: apiBaseUrl must be an http:// or https:// URL", "'localhost:8080'"),
        ),
        (
            "[{id: 'openai:chat:m', config: {apiHost: 'http://x:1'}}]",
            ("providers[0].config.apiHost: apiHost must be a host name", "write a full URL as apiBaseUrl"),
        ),
        (
            "[{id: 'openai:chat:m', config: {apiBaseUrl: 'http://h/v1', apiKeyEnvar: 3}}]",
            ("providers[0].config.apiKeyEnvar: apiKeyEnvar must be text",),
        ),
        (
            "[{id: 'openai:chat:', config: {apiBaseUrl: 'http://h/v1'}}]",
            ("providers[0]: 'openai:chat:' names no model", "openai:chat:NAME"),
        ),
        (
            "[{id: 'openai:chat:m', config: {apiBaseUrl: 'http://h/v1', temperature: 9}}]",
            ("providers[0].config.temperature:", "less than or equal to 5"),
        ),
        (
            "[{id: 'openai:chat:m', config: {apiBaseUrl: 'http://h/v1', max_tokens: 5, max_completion_tokens: 6}}]",
            ("providers[0].config.max_completion_tokens: max_completion_tokens and another key both set max_tokens",),
        ),
        ("['ollama:chat:']", ("providers[0]: 'ollama:chat:' names no model",)),
        ("['ollama:chat:../x']", ("providers[0]: 'ollama:../x' is not an Ollama model name",)),
        ("[{id: 'ollama:chat:tiny', config: {num_ctx: 10}}]", ("providers[0].config.num_ctx:", "greater than or equal to 64")),
        ("[{id: 'ollama:chat:tiny', config: {temperature: 0.0001}}]", ("providers[0].config.temperature: temperature 0.0001 is greedy in effect",)),
        ("[{id: 'ollama:completion:tiny', config: {raw: 'yes'}}]", ("providers[0].config.raw: raw must be true or false",)),
        ("['ollama:chat:tiny', 'ollama:completion:tiny']", ("two models are labelled 'tiny'", "distinct label")),
    ],
)  # fmt: skip
def test_bad_provider_values_are_one_line_errors(
    store: Path, project: Project, providers: str, parts: tuple[str, ...]
) -> None:
    bad(project, f"prompts: [hi]\nproviders: {providers}\n", *parts)


def test_max_tokens_from_config_must_fit_the_context(store: Path, project: Project) -> None:
    bad(
        project,
        """
        prompts: [hi]
        providers:
          - {id: "ollama:chat:tiny", config: {num_ctx: 256, num_predict: 300}}
        """,
        "params.max_tokens (300) must be smaller than n_ctx (256) of model 'tiny'",
    )


def test_the_cli_prints_the_error_without_a_traceback(
    store: Path, project: Project, cli: Cli
) -> None:
    path = project.write(
        SUITE,
        """
        prompts: [hi]
        providers:
          - id: openai:chat:m
            config: {apiBaseUrl: "127.0.0.1:8080"}
        """,
    )
    r = cli("validate", path)
    assert r.code == 2
    assert r.err.startswith(f"error: {path}:4: providers[0].config.apiBaseUrl:")
    assert "Traceback" not in r.err


# --- end to end --------------------------------------------------------------------------------


def test_an_unchanged_config_runs_on_the_local_server(
    server: Scripted,  # noqa: F811
    project: Project,
    cli: Cli,
) -> None:
    path = project.write(
        SUITE,
        f"""
        description: a promptfoo config, unchanged
        prompts:
          - "Capital of {{{{country}}}}?"
        providers:
          - id: openai:chat:m
            label: my-server
            config:
              apiBaseUrl: {server.url}
              temperature: 0.3
              max_tokens: 9
              seed: 5
        tests:
          - vars: {{country: France}}
            assert: [{{type: icontains, value: France}}]
        """,
    )
    r = cli("run", path, "-o", "out")
    assert r.code == 0, r.err
    assert f"openai:chat:m runs as model m at {server.url} (chat endpoint)" in " ".join(
        r.err.split()
    )
    ((route, body, _),) = server.posts
    assert route == "/v1/chat/completions"  # openai:chat: the chat endpoint, even for text
    assert body["messages"] == [{"role": "user", "content": "Capital of France?"}]
    sent = {k: body[k] for k in ("model", "temperature", "max_tokens", "seed")}
    assert sent == {"model": "m", "temperature": 0.3, "max_tokens": 9, "seed": 5}
    lines = (project.root / "out" / "results.jsonl").read_text().splitlines()
    (row,) = [json.loads(line) for line in lines]
    assert (row["model"], row["status"], row["output"]) == (
        "my-server",
        "pass",
        "chat:Capital of France?",
    )
    assert row["params"]["temperature"] == 0.3


@pytest.mark.model
def test_an_unchanged_config_runs_on_the_ollama_model(tmp_path: Path) -> None:
    """promptfoo's `ollama:chat:NAME` on a store laid out as Ollama's, holding the bundled
    SmolLM2: the same greedy outputs as the bundled model with the same settings."""
    smollm2 = BUNDLED["smollm2"].locate()
    assert smollm2 is not None, BUNDLED["smollm2"].install
    store = tmp_path / "ollama-models"
    ollama_model(store, "smollm2", "135m", gguf=smollm2)
    env = {**os.environ, "OLLAMA_MODELS": str(store), "PROMPTLAB_CACHE": str(tmp_path / "cache")}
    config = """
prompts:
  - "What is the capital of {{ country }}? Answer in one word."
providers:
  - id: ollama:chat:smollm2:135m
    config: {temperature: 0, num_predict: 6, num_ctx: 512, num_thread: 1}
tests:
  - vars: {country: France}
  - vars: {country: Japan}
"""
    bundled = """
prompts:
  - "What is the capital of {{ country }}? Answer in one word."
models:
  - {path: smollm2, n_ctx: 512, n_threads: 1}
params: {temperature: 0, max_tokens: 6}
tests:
  - vars: {country: France}
  - vars: {country: Japan}
"""
    outputs = {}
    for name, text in (("ollama", config), ("bundled", bundled)):
        suite = tmp_path / name / SUITE
        suite.parent.mkdir()
        suite.write_text(text)
        out = tmp_path / f"run-{name}"
        r = subprocess.run(
            [sys.executable, "-m", "promptlab", "run", suite, "-o", out, "--no-cache"],
            cwd=suite.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        outputs[name] = sorted((row["vars"]["country"], row["output"]) for row in rows)
        if name == "ollama":
            assert "runs as the Ollama model smollm2:135m, in-process" in " ".join(r.stderr.split())
            assert {row["model"] for row in rows} == {"smollm2:135m"}
            assert {row["params"]["max_tokens"] for row in rows} == {6}
            manifest = json.loads((out / "manifest.json").read_text())
            (record,) = manifest["models"]
            assert record["source"] == "ollama"
            assert record["path"].startswith(str(store / "blobs" / "sha256-"))
    assert outputs["ollama"] == outputs["bundled"]
    assert all(text.strip() for _, text in outputs["ollama"])
