"""`hf://` models through the real huggingface_hub client, against a hub served from this test
(hub_server.py). Split models have their own file, test_hub_split.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import COMMIT, TOKEN, Hub, Repo, env_for, promptlab
from model_stores import header_gguf

from promptlab.errors import InputError
from promptlab.models import BUNDLED, hub


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Hub]:
    files = tmp_path / "served"
    tiny = header_gguf(files / "tiny-Q4_K_M.gguf")
    other = header_gguf(files / "tiny-Q8_0.gguf", file_type=7)
    part1 = header_gguf(files / "part1.gguf", file_type=17, split=(0, 2))
    part2 = header_gguf(files / "part2.gguf", file_type=17, split=(1, 2))
    server = Hub(
        {
            "acme/tiny-GGUF": Repo(
                COMMIT,
                {
                    "tiny-Q4_K_M.gguf": tiny,
                    "tiny-Q8_0.gguf": other,
                    "sub/tiny-Q5_K_M-00001-of-00002.gguf": part1,
                    "sub/tiny-Q5_K_M-00002-of-00002.gguf": part2,
                    "tiny-Q6_K.gguf": other,
                    "tiny-Q6_K-imatrix.gguf": other,
                    "README.md": tiny,
                },
            )
        }
    )
    server.start()
    yield server
    if server.server is not None and server.server.socket.fileno() != -1:
        server.stop()


def suite(tmp_path: Path, model: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f'prompts: ["Hi"]\nmodels:\n  - path: "{model}"\n')
    return path


def snapshot(tmp_path: Path, file: str) -> Path:
    return tmp_path / "hf-home" / "hub" / "models--acme--tiny-GGUF" / "snapshots" / COMMIT / file


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "repo", "file", "quant", "revision"),
    [
        (
            "hf://acme/tiny-GGUF/tiny-Q4_K_M.gguf",
            "acme/tiny-GGUF",
            "tiny-Q4_K_M.gguf",
            None,
            "main",
        ),
        ("hf://acme/tiny-GGUF/sub/x.gguf@v1.0", "acme/tiny-GGUF", "sub/x.gguf", None, "v1.0"),
        ("hf://acme/tiny-GGUF@dev/x.gguf", "acme/tiny-GGUF", "x.gguf", None, "dev"),
        ("hf://acme/tiny-GGUF:q4_k_m", "acme/tiny-GGUF", None, "q4_k_m", "main"),
        ("hf://acme/tiny-GGUF:Q8_0@refs/pr/1", "acme/tiny-GGUF", None, "Q8_0", "refs/pr/1"),
    ],
)
def test_references(
    spec: str, repo: str, file: str | None, quant: str | None, revision: str
) -> None:
    assert hub.parse(spec, "m") == hub.Ref(repo, file, quant, revision)


@pytest.mark.parametrize(
    "spec",
    [
        "hf://acme",
        "hf://acme/tiny",
        "hf://acme/tiny/model.bin",
        "hf://a/b/../c.gguf",
        "hf://a/b@x:Q4@y",
    ],
)
def test_bad_references(spec: str) -> None:
    with pytest.raises(InputError, match="is not a hub model reference"):
        hub.parse(spec, "models[0]")


@pytest.mark.parametrize(
    ("name", "quant", "hit"),
    [
        ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Q4_K_M", True),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M", True),
        ("model.Q4_K_M.gguf", "q4_k_m", True),
        ("model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M", True),
        ("model-Q4_K_M.gguf", "Q4_K", False),  # a prefix of another quant is not that quant
        ("model-IQ4_XS.gguf", "Q4_XS", False),
        ("Q4_K_M/model.gguf", "Q4_K_M", False),  # the file's name must carry it
    ],
)
def test_quant_matching(name: str, quant: str, hit: bool) -> None:
    assert hub.quant_matches(name, quant) is hit


def test_commit_is_read_from_the_snapshot_path() -> None:
    path = Path(f"/c/hub/models--a--b/snapshots/{COMMIT}/sub/m.gguf")
    assert hub.commit_of(path) == COMMIT
    assert hub.facts(hub.parse("hf://a/b:Q4_K_M", "m"), path)["hf"] == {
        "repo": "a/b",
        "file": "sub/m.gguf",
        "quant": "Q4_K_M",
        "revision": "main",
        "commit": COMMIT,
    }


LAZY = """
import json, sys
from pathlib import Path
import promptlab.cli, promptlab.console, promptlab.core
from promptlab.models import catalog, hub, sources
from promptlab.suite import load_suite
suite = load_suite(Path(sys.argv[1]))
before = "huggingface_hub" in sys.modules
hub._offline()  # the first call that needs the library
print(json.dumps([suite.models[0].label, before, "huggingface_hub" in sys.modules]))
"""


def test_huggingface_hub_is_imported_only_when_a_hub_model_is_resolved(tmp_path: Path) -> None:
    """It costs ~0.25 s of start-up: loading a suite that names an hf:// model does not pay it."""
    path = suite(tmp_path, "hf://acme/tiny:Q4_K_M")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run(
        [sys.executable, "-c", LAZY, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["tiny:Q4_K_M", False, True]


# --- the real client against the local hub ----------------------------------------------------

RESOLVE = """
import json, sys
from pathlib import Path
from promptlab.errors import PromptlabError
from promptlab.models import resolve
out = {}
for spec in sys.argv[1:]:
    try:
        out[spec] = {"path": str(resolve(spec, Path.cwd(), "models[0]"))}
    except PromptlabError as exc:
        out[spec] = {"error": exc.one_line(), "code": int(exc.exit_code)}
print(json.dumps(out))
"""


def resolve_all(specs: list[str], env: dict[str, str], cwd: Path) -> dict[str, dict[str, object]]:
    """Resolve each spec in one fresh process (huggingface_hub reads its env when imported)."""
    r = subprocess.run(
        [sys.executable, "-c", RESOLVE, *specs],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # no warnings from the library: errors are one line each
    result: dict[str, dict[str, object]] = json.loads(r.stdout)
    return result


FILE = "hf://acme/tiny-GGUF/tiny-Q4_K_M.gguf"
QUANT = "hf://acme/tiny-GGUF:q8_0"


def test_downloads_once_then_resolves_offline_from_the_cache(served: Hub, tmp_path: Path) -> None:
    env = env_for(tmp_path, served.url)
    s = tmp_path / "two.yaml"
    s.write_text(f'prompts: ["Hi"]\nmodels:\n  - path: "{FILE}"\n  - path: "{QUANT}"\n')
    # tqdm hides bars when stderr is not a terminal; TQDM_POSITION=-1 is huggingface_hub's switch
    # to show them anyway, so the test sees the bar a user would.
    r = promptlab("validate", s, env={**env, "TQDM_POSITION": "-1"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model tiny-Q4_K_M: tiny-Q4_K_M.gguf" in r.stdout
    assert "model tiny-GGUF:q8_0: tiny-Q8_0.gguf" in r.stdout
    served_files = served.repos["acme/tiny-GGUF"].files
    for name in ("tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"):
        assert snapshot(tmp_path, name).read_bytes() == served_files[name].read_bytes()
        assert name in r.stderr  # the library's own progress bar names the file
        for method in ("HEAD", "GET"):
            request = (method, f"/acme/tiny-GGUF/resolve/main/{name}", f"Bearer {TOKEN}")
            assert request in served.requests  # with the user's token
    # The shorthand listed the repo to find its one Q8_0 file.
    listing = ("GET", "/api/models/acme/tiny-GGUF/revision/main", f"Bearer {TOKEN}")
    assert listing in served.requests

    expected = {
        FILE: {"path": str(snapshot(tmp_path, "tiny-Q4_K_M.gguf"))},
        QUANT: {"path": str(snapshot(tmp_path, "tiny-Q8_0.gguf"))},
    }
    # Cached: no request at all with the server up, none possible with it gone, nor offline.
    before = len(served.requests)
    assert resolve_all([FILE, QUANT], env, tmp_path) == expected
    assert len(served.requests) == before
    served.stop()
    assert resolve_all([FILE, QUANT], env, tmp_path) == expected
    assert resolve_all([FILE, QUANT], {**env, "HF_HUB_OFFLINE": "1"}, tmp_path) == expected


def test_hub_errors_are_one_line(served: Hub, tmp_path: Path) -> None:
    env = env_for(tmp_path, served.url)
    got = resolve_all(
        [
            "hf://acme/nothing/x.gguf",
            "hf://acme/tiny-GGUF/missing.gguf",
            "hf://acme/tiny-GGUF/tiny-Q8_0.gguf@nope",
            "hf://acme/tiny-GGUF:Q2_K",
            "hf://acme/tiny-GGUF:Q6_K",
        ],
        env,
        tmp_path,
    )
    assert got == {
        "hf://acme/nothing/x.gguf": {
            "code": 2,
            "error": "models[0]: hub repository acme/nothing not found (or private); check the "
            "name; for a private repo log in (`hf auth login`) or set HF_TOKEN",
        },
        "hf://acme/tiny-GGUF/missing.gguf": {
            "code": 2,
            "error": "models[0]: acme/tiny-GGUF has no file missing.gguf at main; list its files "
            "with `hf models ls acme/tiny-GGUF`, or use hf://acme/tiny-GGUF:QUANT",
        },
        "hf://acme/tiny-GGUF/tiny-Q8_0.gguf@nope": {
            "code": 2,
            "error": "models[0]: revision nope of acme/tiny-GGUF not found; use a branch, tag or "
            "commit that exists",
        },
        "hf://acme/tiny-GGUF:Q2_K": {
            "code": 2,
            "error": "models[0]: no .gguf file in acme/tiny-GGUF at main carries Q2_K; its GGUF "
            "files: sub/tiny-Q5_K_M-00001-of-00002.gguf, sub/tiny-Q5_K_M-00002-of-00002.gguf, "
            "tiny-Q4_K_M.gguf, tiny-Q6_K-imatrix.gguf, tiny-Q6_K.gguf, tiny-Q8_0.gguf",
        },
        "hf://acme/tiny-GGUF:Q6_K": {
            "code": 2,
            "error": "models[0]: 2 models in acme/tiny-GGUF at main carry Q6_K: "
            "tiny-Q6_K-imatrix.gguf, tiny-Q6_K.gguf; name one: "
            "hf://acme/tiny-GGUF/tiny-Q6_K-imatrix.gguf",
        },
    }
    offline = resolve_all([FILE, QUANT], {**env, "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert offline == {
        FILE: {
            "code": 2,
            "error": f"models[0]: {FILE} is not in the hub cache, and HF_HUB_OFFLINE is set; "
            "unset HF_HUB_OFFLINE to download it",
        },
        QUANT: {
            "code": 2,
            "error": "models[0]: no cached file of acme/tiny-GGUF carries q8_0, and "
            "HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download it, or name a cached file",
        },
    }
    # Through the CLI, a hub that cannot be reached is a runtime failure (exit 1), one line.
    # (The shorthand fails at once; a file name waits out the library's ~25 s of retries.)
    served.stop()
    r = promptlab("validate", suite(tmp_path, QUANT), env=env, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: {tmp_path / 's.yaml'}:3: models[0]: cannot reach {served.url} to download "
        f"{QUANT}, and it is not cached; check the network (or HF_ENDPOINT), then run again\n"
    )


# --- the real model, downloaded from the local hub and run -----------------------------------

RUN = """
prompts: ["Q: What is the capital of {{ country }}?\\nA:"]
models:
  - path: "MODEL"
    n_ctx: 256
    n_threads: 1
params: {temperature: 0, max_tokens: 6}
tests:
  - vars: {country: France}
"""


@pytest.mark.model
def test_a_hub_model_runs_and_its_commit_is_pinned_in_the_manifest(tmp_path: Path) -> None:
    smollm2 = BUNDLED["smollm2"].locate()
    assert smollm2 is not None, BUNDLED["smollm2"].install
    server = Hub({"acme/smol-GGUF": Repo(COMMIT, {"smol-Q4_1.gguf": smollm2})})
    server.start()
    env = env_for(tmp_path, server.url)
    s = tmp_path / "run.yaml"
    s.write_text(RUN.replace("MODEL", "hf://acme/smol-GGUF:Q4_1"))
    try:
        r = promptlab(
            "run", s, "-o", tmp_path / "a", "--no-cache", env=env, cwd=tmp_path, timeout=300
        )
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    # Offline now: the same suite runs from the cache.
    r = promptlab("run", s, "-o", tmp_path / "b", "--no-cache", env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    outputs = []
    for run in ("a", "b"):
        manifest = json.loads((tmp_path / run / "manifest.json").read_text())
        (record,) = manifest["models"]
        assert record["label"] == "smol-GGUF:Q4_1"
        assert record["source"] == "hf"
        assert record["hf"] == {
            "repo": "acme/smol-GGUF",
            "file": "smol-Q4_1.gguf",
            "quant": "Q4_1",
            "revision": "main",
            "commit": COMMIT,
        }
        assert record["file_name"] == "smol-Q4_1.gguf"
        assert record["sha256"] == hashlib.sha256(smollm2.read_bytes()).hexdigest()
        (row,) = [
            json.loads(x) for x in (tmp_path / run / "results.jsonl").read_text().splitlines()
        ]
        outputs.append(row["output"])
    assert outputs[0] == outputs[1] and outputs[0].strip()
