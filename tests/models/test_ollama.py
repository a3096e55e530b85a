"""`ollama:NAME[:TAG]` models, on folders laid out exactly as Ollama lays them out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult, Project
from model_stores import OLLAMA_PARAMS, OLLAMA_TEMPLATE, header_gguf, ollama_blob, ollama_model

from promptlab.errors import InputError
from promptlab.models import BUNDLED, file_sha256, ollama, resolve

Cli = Callable[..., CliResult]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ollama-models"
    root.mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


@pytest.mark.parametrize(
    ("spec", "ref"),
    [
        ("ollama:llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b")),
        ("ollama:llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest")),
        ("ollama:hf.co/bartowski/Qwen-GGUF:Q4_K_M", ("hf.co", "bartowski", "Qwen-GGUF", "Q4_K_M")),
        ("ollama:someone/tiny:v1", ("registry.ollama.ai", "someone", "tiny", "v1")),
    ],
)
def test_names_map_to_manifest_paths(spec: str, ref: tuple[str, str, str, str]) -> None:
    parsed = ollama.parse(spec, "models[0]")
    assert (parsed.registry, parsed.namespace, parsed.name, parsed.tag) == ref
    assert parsed.manifest(Path("/m")) == Path("/m/manifests", *ref)


@pytest.mark.parametrize("spec", ["ollama:", "ollama:../etc:x", "ollama:a/b/c/d", "ollama:x:"])
def test_bad_names_are_refused_before_any_path_is_built(spec: str) -> None:
    with pytest.raises(InputError, match="is not an Ollama model name"):
        ollama.parse(spec, "models[0]")


def test_display_names_are_what_ollama_list_shows() -> None:
    assert ollama.parse("ollama:llama3.2", "w").display == "llama3.2:latest"
    assert ollama.parse("ollama:me/x:1", "w").display == "me/x:1"
    assert ollama.parse("ollama:hf.co/a/b:q", "w").display == "hf.co/a/b:q"


def test_resolves_to_the_gguf_blob_and_records_template_and_params(
    store: Path, tmp_path: Path
) -> None:
    gguf = header_gguf(tmp_path / "src.gguf", chat_template="<|im_start|>{{ x }}")
    ollama_model(store, "tiny", "q4", gguf=gguf, system="Be terse.")
    path = resolve("ollama:tiny:q4", tmp_path, "models[0]")
    assert path.parent == store / "blobs"
    assert path.name == f"sha256-{file_sha256(gguf)}"
    assert path.read_bytes() == gguf.read_bytes()

    facts = ollama.find("ollama:tiny:q4", "m").facts()
    assert facts["source"] == "ollama"
    info = facts["ollama"]
    assert info["name"] == "tiny:q4"
    assert info["template"] == OLLAMA_TEMPLATE
    assert info["template_applied"] is False
    assert info["params"] == OLLAMA_PARAMS
    assert info["system"] == "Be terse."
    assert info["digest"] == f"sha256:{file_sha256(gguf)}"


def test_default_tag_is_latest_and_names_match_case_insensitively(
    store: Path, tmp_path: Path
) -> None:
    ollama_model(store, "tiny", gguf=header_gguf(tmp_path / "a.gguf"))
    assert resolve("ollama:tiny", tmp_path, "m").parent == store / "blobs"
    assert resolve("ollama:TINY:Latest", tmp_path, "m").parent == store / "blobs"


def test_no_ollama_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(InputError) as exc:
        resolve("ollama:llama3.2", tmp_path, "models[0]")
    assert exc.value.one_line() == (
        f"models[0]: no Ollama models folder at {tmp_path / 'nowhere'} (from OLLAMA_MODELS); "
        "install Ollama and `ollama pull` the model, or set OLLAMA_MODELS to its models folder"
    )


def test_without_ollama_models_the_home_folder_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / ".ollama" / "models"
    ollama_model(root, "tiny", gguf=header_gguf(tmp_path / "a.gguf"))
    assert resolve("ollama:tiny", tmp_path, "m").parent == root / "blobs"


def test_unknown_model_lists_close_names(store: Path, tmp_path: Path) -> None:
    gguf = header_gguf(tmp_path / "a.gguf")
    ollama_model(store, "smollm2", "135m", gguf=gguf)
    ollama_model(store, "qwen2.5", "0.5b", gguf=gguf)
    with pytest.raises(InputError) as exc:
        resolve("ollama:smolm2:135m", tmp_path, "models[0]")
    assert exc.value.one_line() == (
        f"models[0]: Ollama model smolm2:135m not found in {store}; did you mean smollm2:135m? "
        "(`ollama pull smolm2:135m` fetches it)"
    )
    # Another tag of an installed model is offered too, however far the tag is.
    with pytest.raises(InputError, match=r"did you mean smollm2:135m\?"):
        resolve("ollama:smollm2:1.7b-instruct-q8_0", tmp_path, "models[0]")
    with pytest.raises(InputError, match=r"installed: qwen2.5:0.5b, smollm2:135m"):
        resolve("ollama:mistral", tmp_path, "models[0]")


def test_missing_blob(store: Path, tmp_path: Path) -> None:
    gguf = header_gguf(tmp_path / "a.gguf")
    ollama_model(store, "tiny", gguf=gguf)
    (store / "blobs" / f"sha256-{file_sha256(gguf)}").unlink()
    with pytest.raises(InputError) as exc:
        resolve("ollama:tiny", tmp_path, "models[0]")
    assert exc.value.one_line() == (
        f"models[0]: Ollama model tiny:latest's blob sha256-{file_sha256(gguf)} is missing from "
        f"{store / 'blobs'}; run `ollama pull tiny:latest` again"
    )


def test_safetensors_layers_are_not_gguf(store: Path) -> None:
    tensor = {"mediaType": "application/vnd.ollama.image.tensor", **ollama_blob(store, b"\0" * 8)}
    ollama_model(store, "imported", gguf=None, extra_layers=[tensor, tensor])
    with pytest.raises(InputError) as exc:
        resolve("ollama:imported", store, "models[0]")
    assert "stores 2 safetensors tensor layers, not a GGUF file" in exc.value.one_line()
    assert "llama.cpp runs GGUF only" in exc.value.one_line()


def test_a_model_blob_that_is_not_gguf(store: Path, tmp_path: Path) -> None:
    fake = tmp_path / "weights.bin"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    ollama_model(store, "odd", gguf=fake)
    with pytest.raises(InputError, match=r"Ollama model odd:latest's blob .* is not a GGUF file"):
        resolve("ollama:odd", tmp_path, "models[0]")


def test_a_broken_manifest(store: Path, tmp_path: Path) -> None:
    path = store / "manifests" / "registry.ollama.ai" / "library" / "bad" / "latest"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"Ollama manifest .* is unreadable"):
        resolve("ollama:bad", tmp_path, "models[0]")


def test_cli_names_the_suite_line_and_exits_2(store: Path, project: Project, cli: Cli) -> None:
    ollama_model(store, "smollm2", "135m", gguf=header_gguf(project.root / "a.gguf"))
    suite = project.write(
        "evals/s.yaml",
        """
        prompts: ["Hi"]
        models:
          - path: ollama:smollm2:13m
        """,
    )
    r = cli("validate", suite)
    assert r.code == 2
    assert r.err.startswith(f"error: {suite}:3: models[0]: Ollama model smollm2:13m not found")
    assert "did you mean smollm2:135m?" in r.err
    assert "Traceback" not in r.err


def test_validate_accepts_an_ollama_model_and_labels_it(
    store: Path, project: Project, cli: Cli
) -> None:
    gguf = header_gguf(project.root / "a.gguf", chat_template="<|im_start|>{{ messages }}")
    ollama_model(store, "tiny", "q4", gguf=gguf)
    suite = project.write(
        "evals/s.yaml",
        """
        prompts: ["Hi"]
        models:
          - path: ollama:tiny:q4
        """,
    )
    r = cli("render", suite, "--json")
    assert r.code == 0, r.err
    (cell,) = json.loads(r.out)
    assert cell["model"] == "tiny:q4"


# --- the real model, through llama.cpp -------------------------------------------------------

SUITE = """
prompts:
  - "Q: What is the capital of {{ country }}?\\nA:"
models:
  - path: MODEL
    n_ctx: 256
    n_threads: 1
params: {temperature: 0, max_tokens: 6}
tests:
  - vars: {country: France}
  - vars: {country: Japan}
"""


@pytest.mark.model
def test_a_suite_runs_in_process_on_an_ollama_blob(tmp_path: Path) -> None:
    smollm2 = BUNDLED["smollm2"].locate()
    assert smollm2 is not None, BUNDLED["smollm2"].install
    store = tmp_path / "ollama"
    ollama_model(store, "smollm2", "135m", gguf=smollm2)
    env = {
        **os.environ,
        "OLLAMA_MODELS": str(store),
        "PROMPTLAB_CACHE": str(tmp_path / "cache"),
    }
    outputs = {}
    for name, model in (("ollama", "ollama:smollm2:135m"), ("bundled", "smollm2")):
        suite = tmp_path / f"{name}.yaml"
        suite.write_text(SUITE.replace("MODEL", model))
        out = tmp_path / f"run-{name}"
        r = subprocess.run(
            [sys.executable, "-m", "promptlab", "run", suite, "-o", out, "--no-cache"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert [row["status"] for row in rows] == ["unchecked", "unchecked"]
        outputs[name] = [row["output"] for row in rows]
        manifest = json.loads((out / "manifest.json").read_text())
        (record,) = manifest["models"]
        assert record["sha256"] == file_sha256(smollm2)
        if name == "ollama":
            assert record["label"] == "smollm2:135m"
            assert record["path"].startswith(str(store / "blobs" / "sha256-"))
            assert record["source"] == "ollama"
            assert record["ollama"]["params"] == OLLAMA_PARAMS
            assert record["ollama"]["template"] == OLLAMA_TEMPLATE
            assert record["chat_template_source"] == "gguf:tokenizer.chat_template"
    # The same file, greedy: the Ollama name changes where the model is found, nothing else.
    assert outputs["ollama"] == outputs["bundled"]
    assert all(text.strip() for text in outputs["ollama"])
