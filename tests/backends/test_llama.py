"""The real bundled models through llama.cpp. Slow-ish (≈30 s in all); CI runs them too.

Every run of the real engine happens in a subprocess: a llama-cpp-python build that crashes on
decode then fails one test with its signal instead of killing the whole pytest session.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

from promptlab.models import BUNDLED, cache_dir, describe

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]
REAL_CACHE = Path.home() / ".cache" / "promptlab"


def promptlab(*args: str | Path, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # --no-cache: these tests are about the model, so every cell must really run.
        [
            sys.executable,
            "-m",
            "promptlab",
            *(str(a) for a in args),
            *(["--no-cache"] if args[:1] == ("run",) else []),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rows_of(folder: Path) -> list[dict[str, Any]]:
    text = (folder / "results.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def manifest_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


def smollm2() -> Path:
    path = BUNDLED["smollm2"].locate()
    if path is None:
        pytest.fail(f"smollm2 is not installed: {BUNDLED['smollm2'].install}")
    return path


@pytest.fixture
def real_cache(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Use the user's cache, so gemma3's 253 MB file is assembled once and reused."""
    monkeypatch.delenv("PROMPTLAB_CACHE", raising=False)
    return cache_dir()


# --- the crash guard ---------------------------------------------------------------------------

GENERATE = """
import json
from promptlab.backends import LoadSettings, Sampling, open_backend
from promptlab.models import BUNDLED

backend = open_backend(BUNDLED["smollm2"].locate(), LoadSettings(None, 256, 256, 1, 1, False, 0))
gen = backend.generate("The capital of France is", True, Sampling(0.0, 0.95, 40, 0.05, 4, (), 0, 1.0))
facts = backend.info.facts
backend.close()
print(json.dumps({"text": gen.text, "completion_tokens": gen.completion_tokens,
                  "amx_workaround": facts["amx_workaround"]}))
"""


def test_first_decode_does_not_crash() -> None:
    """llama.cpp#20824: ggml's AMX matmul segfaults on the first decode of some builds/CPUs."""
    smollm2()
    r = subprocess.run(
        [sys.executable, "-c", GENERATE], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, (
        f"loading smollm2 and decoding crashed with return code {r.returncode} "
        f"(-11 is a segfault: see llama.cpp#20824 and scripts/build_llama.sh)\n{r.stderr[-2000:]}"
    )
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["completion_tokens"] >= 1
    assert result["text"].strip()
    assert isinstance(result["amx_workaround"], bool)


def test_build_has_amx_parses_system_info() -> None:
    from promptlab.backends.llama_runtime import build_has_amx

    amx = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | REPACK = 1 |"
    assert build_has_amx(amx) is True
    assert build_has_amx(amx.replace("AMX_INT8 = 1", "AMX_INT8 = 0")) is False
    assert build_has_amx("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | OPENMP = 1 |") is False
    assert build_has_amx("") is False
    assert isinstance(build_has_amx(), bool)  # this build's own system info


def test_without_extra_buffers_patches_default_params_for_the_load_only() -> None:
    import llama_cpp.llama_cpp as llama_lib

    from promptlab.backends.llama_runtime import without_extra_buffers

    original = llama_lib.llama_model_default_params
    assert llama_lib.llama_model_default_params().use_extra_bufts is True
    with without_extra_buffers(True):
        assert llama_lib.llama_model_default_params().use_extra_bufts is False
    assert llama_lib.llama_model_default_params is original
    assert llama_lib.llama_model_default_params().use_extra_bufts is True
    with without_extra_buffers(False):
        assert llama_lib.llama_model_default_params().use_extra_bufts is True
    with pytest.raises(RuntimeError), without_extra_buffers(True):
        raise RuntimeError("load failed")
    assert llama_lib.llama_model_default_params is original


# --- end to end through the CLI ------------------------------------------------------------------


def test_example_suite_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = promptlab("run", "evals/example.yaml", "-o", out, "--limit", "2", cwd=REPO, timeout=300)
    assert r.returncode in (0, 100), r.stderr[-2000:]
    rows = rows_of(out)
    assert len(rows) == 6  # 3 prompts × 2 tests
    for row in rows:
        assert row["status"] in ("pass", "fail"), row["error"]
        assert row["output"].strip() or row["status"] == "fail"
        assert row["completion_tokens"] >= 1 or row["status"] == "fail"
        assert row["prompt_tokens"] > 0
    chat = [r for r in rows if r["prompt"] == "chat_system"]
    assert all(r["chat_applied"] for r in chat)
    assert all(r["rendered_prompt"].startswith("<|im_start|>system") for r in chat)

    m = manifest_of(out)
    assert m["status"] == "complete"
    assert m["suite"]["path"] == "evals/example.yaml"
    model = m["models"][0]
    assert re.fullmatch(r"[0-9a-f]{64}", model["sha256"])
    assert model["architecture"] == "llama"
    assert model["quantization"] == "Q4_1"
    assert model["size_bytes"] == smollm2().stat().st_size
    assert model["chat_template_source"] == "gguf:tokenizer.chat_template"
    runtime = model["runtime"]
    assert runtime["backend"] == "llama.cpp"
    assert isinstance(runtime["gpu_offload_supported"], bool)
    assert isinstance(runtime["layers_offloaded"], int)
    assert not isinstance(runtime["layers_offloaded"], bool)
    assert runtime["n_layer"] == 30
    # llama.cpp counts the output layer as one more: 31 for SmolLM2's 30 blocks.
    assert runtime["layers_total"] == 31
    if runtime["gpu_offload_supported"]:
        assert runtime["layers_offloaded"] == 31, "every layer should be on the GPU by default"
    else:
        assert runtime["layers_offloaded"] == 0
    assert runtime["llama_cpp_python"] == "0.3.36"
    assert {"n_ctx", "n_threads", "n_gpu_layers"} <= set(model["load_settings"])
    for name in ("results.csv", "summary.csv", "report.html"):
        assert (out / name).is_file()


SMALL = """
prompts:
  - raw: "Name one colour of the rainbow. {{ extra }}"
    label: colour
  - file://../prompts/ask.j2
models:
  - path: smollm2
    n_ctx: N_CTX
    n_threads: 1
params:
  temperature: 0
  max_tokens: 8
tests:
TESTS
"""

ASK = """
{% system %}Answer in a few words.{% endsystem %}
{% user %}What is 2 + 2? {{ extra }}{% enduser %}
"""


def small_suite(project: Project, n_ctx: int, tests: str) -> Path:
    project.write("prompts/ask.j2", ASK)
    return project.write(
        "evals/small.yaml", SMALL.replace("N_CTX", str(n_ctx)).replace("TESTS", tests)
    )


def test_greedy_runs_are_deterministic(project: Project) -> None:
    suite = small_suite(project, 512, '  - vars: {extra: ""}\n  - vars: {extra: "Be brief."}')
    outputs = []
    for name in ("a", "b"):
        r = promptlab("run", suite, "-o", project.root / name, cwd=project.root)
        assert r.returncode in (0, 100), r.stderr[-2000:]
        rows = rows_of(project.root / name)
        assert len(rows) == 4
        assert all(row["status"] != "error" for row in rows), rows
        outputs.append([(row["cell_id"], row["output"]) for row in rows])
    assert outputs[0] == outputs[1]
    assert all(text.strip() for _, text in outputs[0])


def test_prompt_longer_than_n_ctx_is_an_error_row(project: Project) -> None:
    long_var = " ".join(["elephant"] * 80)
    suite = small_suite(project, 64, f'  - vars: {{extra: ""}}\n  - vars: {{extra: "{long_var}"}}')
    out = project.root / "out"
    r = promptlab("run", suite, "-o", out, cwd=project.root)
    assert r.returncode == 100, r.stderr[-2000:]
    rows = rows_of(out)
    assert len(rows) == 4
    errors = [row for row in rows if row["status"] == "error"]
    assert len(errors) == 2
    for row in errors:
        assert re.fullmatch(
            r"prompt is \d+ tokens but n_ctx is 64; raise n_ctx in models: or shorten the prompt",
            row["error"],
        ), row["error"]
        assert int(row["error"].split()[2]) >= 80
        assert "elephant" in row["rendered_prompt"]
    ok = [row for row in rows if row["status"] != "error"]
    assert len(ok) == 2
    assert all(row["output"].strip() for row in ok)
    assert manifest_of(out)["status"] == "complete"


# --- gemma3: a base model without a chat template ------------------------------------------------

FEW_SHOT = """
prompts:
  - raw: "Q: What is the capital of France?\\nA: Paris\\nQ: What is the capital of {{ country }}?\\nA:"
    label: few_shot
models:
  - path: gemma3
    n_ctx: 256
    n_threads: 1
params:
  max_tokens: 6
  stop: ["\\n"]
tests:
  - vars: {country: Italy}
    assert:
      - type: icontains
        value: Rome
"""


def test_gemma3_raw_completion(project: Project, real_cache: Path) -> None:
    suite = project.write("evals/gemma.yaml", FEW_SHOT)
    out = project.root / "out"
    r = promptlab("run", suite, "-o", out, cwd=project.root)
    assert r.returncode in (0, 100), r.stderr[-2000:]
    (row,) = rows_of(out)
    assert row["status"] in ("pass", "fail")
    assert row["output"].strip()
    assert row["chat_applied"] is False
    assert row["rendered_prompt"].startswith("Q: What is the capital of France?\nA: Paris\n")
    model = manifest_of(out)["models"][0]
    assert model["architecture"] == "gemma3"
    assert model["chat_template_source"] == "none (raw completion)"
    assert model["path"].startswith(str(real_cache))


def test_gemma3_refuses_chat_roles_before_loading(project: Project, real_cache: Path) -> None:
    suite = project.write(
        "evals/gemma_chat.yaml",
        """
        prompts:
          - raw: "{% user %}What is the capital of {{ country }}?{% enduser %}"
        models:
          - gemma3
        tests:
          - vars: {country: Italy}
        """,
    )
    out = project.root / "out"
    start = time.perf_counter()
    r = promptlab("run", suite, "-o", out, cwd=project.root)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1
    assert "has chat roles but model 'gemma3' has no chat template" in r.stderr
    assert not out.exists()
    assert time.perf_counter() - start < 30


# --- the sha256 cache ---------------------------------------------------------------------------


def test_sha256_is_cached(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    path = smollm2()
    cache = Path(os.environ["PROMPTLAB_CACHE"])  # a fresh, empty cache from the fixture
    first = describe(path)
    assert first["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    stored = json.loads((cache / "sha256.json").read_text())
    assert first["sha256"] in stored.values()

    from promptlab.models.gguf import read_gguf

    info = read_gguf(path)
    import promptlab.models as models

    def no_hashing() -> None:
        raise AssertionError("the model file was hashed again")

    monkeypatch.setattr(models.hashlib, "sha256", no_hashing)
    second = describe(path, info)
    assert second == first

    # And it is really the cache answering: hashing again would fail here.
    def no_hashing(*args: object) -> None:
        raise AssertionError("sha256 recomputed")

    monkeypatch.setattr("promptlab.models.hashlib.sha256", no_hashing)
    assert describe(path, info)["sha256"] == first["sha256"]
