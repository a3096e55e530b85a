"""Split GGUF models (`NAME-00001-of-00002.gguf`): a real two-part split of the bundled SmolLM2,
written once per session by gguf-py, resolved from disk and from a local hub, identified by every
part, listed once, and loaded by llama.cpp from its first part."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hub_server import COMMIT, TOKEN, Hub, Repo, env_for, promptlab
from model_stores import header_gguf, link_or_copy, split_gguf

from promptlab.errors import InputError
from promptlab.models import (
    BUNDLED,
    describe,
    file_sha256,
    gguf_info,
    model_file_identity,
    model_sha256,
    resolve,
)
from promptlab.models.gguf import read_gguf

PART1 = "smol-Q4_1-00001-of-00002.gguf"
PART2 = "smol-Q4_1-00002-of-00002.gguf"
QUANT = "hf://acme/smol-GGUF:Q4_1"
FILE = f"hf://acme/smol-GGUF/{PART1}"


@dataclass(frozen=True)
class Split:
    whole: Path  # the bundled SmolLM2 file
    parts: list[Path]  # its two parts, in order


@pytest.fixture(scope="session")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Split:
    whole = BUNDLED["smollm2"].locate()
    assert whole is not None, BUNDLED["smollm2"].install
    folder = tmp_path_factory.mktemp("split")
    parts = split_gguf(whole, folder / "smol-Q4_1.gguf", parts=2)
    assert [p.name for p in parts] == [PART1, PART2]
    return Split(whole, parts)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sha256 and header caches of this test only: a stale entry cannot pass for a fresh hash."""
    monkeypatch.setenv("PROMPTLAB_CACHE", str(tmp_path / "cache"))


def expected_sha(parts: list[Path]) -> str:
    """A split model's sha256, recomputed here from the bytes: sha256 of the parts' digests."""
    lines = "".join(hashlib.sha256(p.read_bytes()).hexdigest() + "\n" for p in parts)
    return hashlib.sha256(lines.encode()).hexdigest()


# --- the files on disk -----------------------------------------------------------------------


def test_the_parts_are_a_split_of_the_whole_model(smol: Split) -> None:
    whole, first, second = read_gguf(smol.whole), read_gguf(smol.parts[0]), read_gguf(smol.parts[1])
    assert (whole.split_count, whole.split_no) == (1, None)
    assert (first.split_count, first.split_no, second.split_no) == (2, 0, 1)
    assert first.metadata["split.tensors.count"] == whole.n_tensors == 272
    assert first.n_tensors + second.n_tensors == whole.n_tensors
    assert first.n_tensors > 0 and second.n_tensors > 0
    # The model's metadata lives in the first part, so its header reads as the whole file's...
    facts = ("architecture", "name", "quantization", "n_layer", "n_ctx_train", "chat_template")
    assert {k: getattr(first, k) for k in facts} == {k: getattr(whole, k) for k in facts}
    assert first.token_text == whole.token_text
    # ...and the second part carries only the split's keys.
    assert sorted(second.metadata) == ["split.count", "split.no", "split.tensors.count"]


def test_describe_records_every_part(smol: Split) -> None:
    record = describe(smol.parts[0])
    assert record["file_name"] == PART1
    assert record["size_bytes"] == sum(p.stat().st_size for p in smol.parts)
    assert record["sha256"] == expected_sha(smol.parts)
    assert record["split"] == [
        {
            "file_name": p.name,
            "size_bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in smol.parts
    ]
    whole = describe(smol.whole)
    assert "split" not in whole
    assert whole["sha256"] == hashlib.sha256(smol.whole.read_bytes()).hexdigest()
    for key in ("architecture", "name", "quantization", "n_layer", "has_chat_template"):
        assert record[key] == whole[key]


def test_the_model_identity_covers_every_part(smol: Split, tmp_path: Path) -> None:
    """The cache keys on model_identity: a changed second part is another model."""
    from promptlab.engine.handles import model_identity

    folder = tmp_path / "copy"
    folder.mkdir()
    first, second = (Path(shutil.copy2(p, folder)) for p in smol.parts)
    before = (model_sha256(first), model_identity(first), model_file_identity(first))
    assert before[0] == expected_sha(smol.parts)
    assert before[1].startswith(before[0] + "|")
    data = bytearray(second.read_bytes())
    data[-1] ^= 0xFF  # a byte of the last tensor's data
    second.write_bytes(bytes(data))
    stat = second.stat()
    os.utime(second, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = (model_sha256(first), model_identity(first), model_file_identity(first))
    assert after[0] == expected_sha([first, second]) != before[0]
    assert after[1] != before[1] and after[2] != before[2]
    assert file_sha256(first) == hashlib.sha256(smol.parts[0].read_bytes()).hexdigest()


def linked(folder: Path, parts: list[Path]) -> Path:
    """The parts as the hub cache holds them: links named as parts to blobs named by hash."""
    blobs = folder / "blobs"
    blobs.mkdir(parents=True)
    for p in parts:
        link_or_copy(p, blobs / file_sha256(p))
        (folder / p.name).symlink_to(Path("blobs") / file_sha256(p))
    return folder / parts[0].name


def test_a_local_split_resolves_to_its_first_part_beside_the_others(
    smol: Split, tmp_path: Path
) -> None:
    first = linked(tmp_path / "m", smol.parts)
    # Not resolved to its blob: llama.cpp looks for part 2 beside the name it is given.
    assert resolve(str(first), tmp_path, "models[0]") == first
    assert resolve("m/" + PART1, tmp_path, "models[0]") == first
    with pytest.raises(InputError) as exc:
        resolve(str(first.with_name(PART2)), tmp_path, "models[0]")
    assert exc.value.one_line() == (
        f"models[0]: {PART2} is part 2 of 2 of a split GGUF model; name its first part, "
        f"{PART1}: llama.cpp loads the others beside it"
    )
    (tmp_path / "m" / PART2).unlink()
    with pytest.raises(InputError) as exc:
        resolve(str(first), tmp_path, "models[0]")
    assert exc.value.one_line() == (
        f"models[0]: {PART1} is part 1 of 2 of a split GGUF model, and part 2 ({PART2}) is not "
        "beside it; download every part into the same folder"
    )
    # A part whose header is another part's.
    header_gguf(tmp_path / "m" / PART2, split=(0, 2))
    with pytest.raises(InputError, match=f"{PART2} is named part 2 of 2 of a split GGUF model, "):
        resolve(str(first), tmp_path, "models[0]")
    # A whole model that is only named like a part loads alone, as llama.cpp loads it.
    whole = tmp_path / "w" / PART1
    whole.parent.mkdir()
    whole.symlink_to(smol.whole)
    assert resolve(str(whole), tmp_path, "models[0]") == smol.whole.resolve()
    assert model_sha256(whole) == file_sha256(smol.whole)
    assert gguf_info(whole).split_count == 1


def test_a_split_model_is_labelled_by_its_name_not_its_part() -> None:
    from promptlab.models.sources import default_label

    assert default_label(FILE) == "smol-Q4_1"
    assert default_label(f"hf://acme/smol-GGUF/sub/{PART1}@v2") == "smol-Q4_1"
    assert default_label("hf://acme/smol-GGUF/smol-Q4_1.gguf") == "smol-Q4_1"
    assert default_label(QUANT) == "smol-GGUF:Q4_1"


# --- through the hub, with the real client ---------------------------------------------------

RESOLVE = """
import json, sys
from pathlib import Path
from promptlab.errors import PromptlabError
from promptlab.models import resolve, sources
out = {}
for spec in sys.argv[1:]:
    try:
        path = resolve(spec, Path.cwd(), "models[0]")
        out[spec] = {"path": str(path), "hf": sources.source_record(spec, path)["hf"]}
    except PromptlabError as exc:
        out[spec] = {"error": exc.one_line()}
print(json.dumps(out))
"""


def resolve_all(specs: list[str], env: dict[str, str], cwd: Path) -> dict[str, dict[str, object]]:
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
    result: dict[str, dict[str, object]] = json.loads(r.stdout)
    return result


def snapshot(home: Path, file: str, repo: str = "models--acme--smol-GGUF") -> Path:
    return home / "hub" / repo / "snapshots" / COMMIT / file


@pytest.fixture
def smol_hub(smol: Split, tmp_path: Path) -> Iterator[Hub]:
    lone = header_gguf(tmp_path / "served" / "lone.gguf", split=(0, 3))
    third = header_gguf(tmp_path / "served" / "third.gguf", split=(2, 3))
    server = Hub(
        {
            "acme/smol-GGUF": Repo(
                COMMIT,
                {
                    PART1: smol.parts[0],
                    PART2: smol.parts[1],
                    "smol-F16-00001-of-00003.gguf": lone,  # part 2 is missing
                    "smol-F16-00003-of-00003.gguf": third,
                    "sub/odd-Q8_0-00001-of-00002.gguf": lone,  # its header says 3 parts
                    "README.md": smol.parts[1],
                },
            )
        }
    )
    server.start()
    yield server
    if server.server is not None and server.server.socket.fileno() != -1:
        server.stop()


def test_a_split_quant_downloads_every_part_from_one_commit(
    smol: Split, smol_hub: Hub, tmp_path: Path
) -> None:
    env = env_for(tmp_path, smol_hub.url)
    home = tmp_path / "hf-home"
    got = resolve_all([QUANT], env, tmp_path)
    hf = {
        "repo": "acme/smol-GGUF",
        "file": PART1,
        "quant": "Q4_1",
        "revision": "main",
        "commit": COMMIT,
        "parts": [PART1, PART2],
    }
    assert got == {QUANT: {"path": str(snapshot(home, PART1)), "hf": hf}}
    for name, src in zip((PART1, PART2), smol.parts, strict=True):
        assert snapshot(home, name).read_bytes() == src.read_bytes()
    gets = [path for method, path, _ in smol_hub.requests if method == "GET"]
    assert gets == [
        "/api/models/acme/smol-GGUF/revision/main",  # the listing shows both parts
        f"/acme/smol-GGUF/resolve/main/{PART1}",
        f"/acme/smol-GGUF/resolve/{COMMIT}/{PART2}",  # pinned to the first part's commit
    ]
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in smol_hub.requests)

    # Cached: both spellings resolve with the server gone, and offline, without a request.
    before = len(smol_hub.requests)
    smol_hub.stop()
    as_file = {"path": str(snapshot(home, PART1)), "hf": {**hf, "quant": None}}
    for extra in ({}, {"HF_HUB_OFFLINE": "1"}):
        got = resolve_all([QUANT, FILE], {**env, **extra}, tmp_path)
        assert got == {QUANT: {"path": str(snapshot(home, PART1)), "hf": hf}, FILE: as_file}
    assert len(smol_hub.requests) == before

    # A cache holding only the first part: offline, the shorthand says so.
    snapshot(home, PART2).unlink()
    partial = resolve_all([QUANT, FILE], {**env, "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert partial == {
        QUANT: {
            "error": f"models[0]: the hub cache holds only some parts of {QUANT}, and "
            "HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download the others"
        },
        FILE: {
            "error": f"models[0]: part 2 of 2 of {FILE} ({PART2}) is not in the hub cache, and "
            "HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download it"
        },
    }
    # Online again, the hub is asked for the missing part only, at the same commit (its blob is
    # still in the cache, so the library links it back without a GET).
    smol_hub.start()
    before = len(smol_hub.requests)
    got = resolve_all([QUANT], env_for(tmp_path, smol_hub.url), tmp_path)
    assert got == {QUANT: {"path": str(snapshot(home, PART1)), "hf": hf}}
    assert snapshot(home, PART2).read_bytes() == smol.parts[1].read_bytes()
    assert [(m, p) for m, p, _ in smol_hub.requests[before:]] == [
        ("GET", "/api/models/acme/smol-GGUF/revision/main"),
        ("HEAD", f"/acme/smol-GGUF/resolve/{COMMIT}/{PART2}"),
    ]


def test_naming_the_first_part_fetches_the_others(
    smol: Split, smol_hub: Hub, tmp_path: Path
) -> None:
    env = env_for(tmp_path, smol_hub.url)
    (got,) = resolve_all([FILE], env, tmp_path).values()
    assert got["path"] == str(snapshot(tmp_path / "hf-home", PART1))
    assert snapshot(tmp_path / "hf-home", PART2).read_bytes() == smol.parts[1].read_bytes()
    gets = [path for method, path, _ in smol_hub.requests if method == "GET"]
    assert gets == [
        f"/acme/smol-GGUF/resolve/main/{PART1}",
        f"/acme/smol-GGUF/resolve/{COMMIT}/{PART2}",
    ]


def test_split_errors_are_one_line(smol_hub: Hub, tmp_path: Path) -> None:
    env = env_for(tmp_path, smol_hub.url)
    later = f"hf://acme/smol-GGUF/{PART2}"
    f16 = "hf://acme/smol-GGUF/smol-F16-00001-of-00003.gguf"
    odd = "hf://acme/smol-GGUF/sub/odd-Q8_0-00001-of-00002.gguf"
    got = resolve_all([later, "hf://acme/smol-GGUF:F16", f16, odd], env, tmp_path)
    assert got == {
        later: {
            "error": f"models[0]: {later} is part 2 of 2 of a split GGUF model; name its first "
            f"part, {FILE}: promptlab downloads the others"
        },
        "hf://acme/smol-GGUF:F16": {
            "error": "models[0]: hf://acme/smol-GGUF:F16 is a split GGUF model in 3 parts, and "
            "acme/smol-GGUF at main lacks smol-F16-00002-of-00003.gguf; pick another quant, or "
            "ask the repository's owner to upload the missing parts"
        },
        f16: {
            "error": f"models[0]: {f16} is a split GGUF model in 3 parts, and acme/smol-GGUF has "
            f"no smol-F16-00002-of-00003.gguf at {COMMIT[:12]}; pick another quant or file, or "
            "ask the repository's owner to upload it"
        },
        odd: {
            "error": "models[0]: odd-Q8_0-00001-of-00002.gguf is named part 1 of 2 of a split "
            "GGUF model, but its header says part 1 of 3; re-download the model's parts (or "
            "split it again with llama-gguf-split)"
        },
    }
    # Naming a later part is refused before any download.
    assert not any(PART2 in path for _, path, _ in smol_hub.requests)


# --- llama.cpp loads the split ----------------------------------------------------------------


@pytest.mark.model
def test_llama_cpp_loads_the_split_from_its_first_part(smol: Split) -> None:
    from promptlab.backends import LoadSettings, Sampling, open_backend

    settings = LoadSettings(
        n_gpu_layers=None, n_ctx=256, n_batch=256, n_threads=1, n_threads_batch=1,
        flash_attn=False, seed=0,
    )  # fmt: skip
    greedy = Sampling(0.0, 1.0, 0, 0.0, 12, (), 0, 1.0)
    texts = []
    for path in (smol.parts[0], smol.whole):
        backend = open_backend(path, settings)
        try:
            texts.append(backend.generate("The capital of France is", True, greedy).text)
        finally:
            backend.close()
    assert texts[0] == texts[1]
    assert len(texts[0].strip()) > 3


RUN = """
prompts: ["Q: What is the capital of {{ country }}?\\nA:"]
models:
  - {path: "hf://acme/smol-GGUF:Q4_1", label: split, n_ctx: 256, n_threads: 1}
  - {path: "WHOLE", label: whole, n_ctx: 256, n_threads: 1}
params: {temperature: 0, max_tokens: 8}
tests:
  - vars: {country: France}
  - vars: {country: Japan}
"""


@pytest.mark.model
def test_a_split_hub_model_runs_end_to_end(smol: Split, smol_hub: Hub, tmp_path: Path) -> None:
    env = env_for(tmp_path, smol_hub.url)
    s = tmp_path / "run.yaml"
    s.write_text(RUN.replace("WHOLE", str(smol.whole)))
    r = promptlab("run", s, "-o", tmp_path / "out", env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    split, whole = manifest["models"]
    assert split["hf"]["commit"] == COMMIT
    assert split["hf"]["parts"] == [PART1, PART2]
    assert split["file_name"] == PART1
    assert split["sha256"] == expected_sha(smol.parts)
    assert [p["file_name"] for p in split["split"]] == [PART1, PART2]
    assert split["size_bytes"] == sum(p.stat().st_size for p in smol.parts)
    assert whole["sha256"] == hashlib.sha256(smol.whole.read_bytes()).hexdigest()
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    by_model: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda x: x["vars"]["country"]):
        by_model.setdefault(row["model"], []).append(row["output"])
    assert by_model["split"] == by_model["whole"]
    assert all(out.strip() for out in by_model["split"])
