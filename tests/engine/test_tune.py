"""`promptlab tune`: on the fake backend (invented, deterministic speeds) and once on SmolLM2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CliResult, Project

from promptlab import core
from promptlab.backends import LoadSettings, open_backend
from promptlab.backends.fake import FakeBackend
from promptlab.engine.tune import TuneResult, default_threads, parse_threads, tune
from promptlab.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def snippet_of(out: str) -> dict[str, Any]:
    """The YAML after 'paste into the suite:'."""
    text = out.split("paste into the suite:\n", 1)[1]
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_tune_fake_cli_table_best_and_snippet(
    cli: Callable[..., CliResult], project: Project
) -> None:
    r = cli("tune", "fake://echo", "--threads", "1,2,3", "--prompt-tokens", "300", "--repeats", "2")
    assert r.code == 0, r.err
    assert "n_batch 64" in r.out and "n_batch 256" in r.out and "generate" in r.out
    # 512 > 300 prompt tokens: it would decode the same single chunk as 300, so it is skipped.
    assert re.search(r"n_batch 512 not measured", r.out)
    # The fake's speeds: generation peaks at 2 threads, prompts at the most threads and batch.
    assert "best for generation: n_threads 2 (40.0 tok/s)" in r.out
    assert "best for prompts: n_threads_batch 3, n_batch 256" in r.out
    snippet = snippet_of(r.out)
    assert snippet == {
        "models": [{"path": "fake://echo", "n_threads": 2, "n_threads_batch": 3, "n_batch": 256}]
    }
    # The snippet is a valid models: entry.
    project.write(
        "s.yaml",
        'prompts:\n  - raw: "Say {{ x }}"\ntests:\n  - vars: {x: hi}\n' + yaml.safe_dump(snippet),
    )
    v = cli("validate", "s.yaml")
    assert v.code == 0, v.err


def test_tune_core_interleaves_and_reports_progress() -> None:
    seen: list[tuple[int, int]] = []
    result = core.tune(
        "fake://echo", prompt_tokens=128, gen_tokens=4, repeats=3, threads="2,1",
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert result.threads == [1, 2] and result.batches == [64, 128]
    assert result.skipped_batches == [256, 512]
    # A warm-up, then every (threads, batch) once per round; generation once per thread and round.
    assert seen == [(i, 1 + 4 * 3) for i in range(1, 14)]
    assert all(len(v) == 3 for v in result.pp.values()) and all(
        len(v) == 3 for v in result.tg.values()
    )
    assert result.pp_median(2, 128) == pytest.approx(100 * 2 * 128 / 192)
    assert result.best_prompt == (2, 128) and result.best_gen_threads == 2
    # Loaded once, big enough for the prompt, the generation and the largest batch measured.
    assert result.settings.n_batch == 128 and result.settings.n_ctx >= 512
    assert result.settings.n_threads == 2


def test_tune_prompt_shorter_than_every_batch_measures_the_smallest() -> None:
    result = tune("fake://echo", prompt_tokens=20, gen_tokens=2, repeats=1, threads=[1])
    assert result.batches == [64] and result.skipped_batches == [128, 256, 512]
    assert "prefix_chunk" not in result.snippet()


def test_tune_snippet_mentions_prefix_chunk_when_the_best_batch_is_larger() -> None:
    result = tune("fake://echo", prompt_tokens=512, gen_tokens=2, repeats=1, threads=[1])
    assert result.best_prompt == (1, 512)
    text = result.snippet()
    assert "# prefix_chunk: 512" in text
    assert yaml.safe_load(text)["models"][0]["n_batch"] == 512  # the comment stays a comment


def test_best_prompt_is_the_largest_batch_within_5_percent() -> None:
    # Larger n_batch costs nothing else; a smaller one caps prefix_chunk and embed's length.
    result = TuneResult(
        model="m", path="m", settings=LoadSettings(None, 512, 256, 2, 2, False, 0),
        threads=[1, 2], batches=[64, 128, 256], skipped_batches=[512], prompt_tokens=256,
        gen_tokens=8, repeats=1,
        pp={(1, 64): [100.0], (1, 128): [100.0], (1, 256): [100.0],
            (2, 64): [200.0], (2, 128): [191.0], (2, 256): [189.0]},
        tg={1: [10.0], 2: [9.0]},
    )  # fmt: skip
    assert result.best_prompt == (2, 128)
    assert result.best_gen_threads == 1
    assert "n_batch: 128" in result.snippet() and "prefix_chunk" not in result.snippet()


def test_default_threads_at_most_four_values() -> None:
    assert default_threads(1) == [1]
    assert default_threads(2) == [1, 2]
    assert default_threads(4) == [1, 2, 3, 4]
    assert default_threads(6) == [1, 3, 6]
    assert default_threads(16) == [1, 4, 8, 16]
    assert all(len(default_threads(n)) <= 4 for n in range(1, 257))


def test_parse_threads() -> None:
    assert parse_threads("2,1,2") == [1, 2]
    assert parse_threads(" 4 ") == [4]
    for bad in ("", "0", "1,x", "-1", "1.5"):
        with pytest.raises(InputError, match="--threads"):
            parse_threads(bad)


def test_tune_bad_input_exits_2(cli: Callable[..., CliResult], project: Project) -> None:
    r = cli("tune", "fake://echo", "--threads", "0")
    assert r.code == 2 and "--threads" in r.err
    r = cli("tune", "fake://echo", "--repeats", "0")
    assert r.code == 2
    r = cli("tune", "missing.gguf")
    assert r.code == 2 and "not found" in r.err
    with pytest.raises(InputError):
        tune("fake://echo", gen_tokens=0)


def test_fake_measure_checks_limits() -> None:
    from promptlab.backends import CellError

    backend = open_backend("fake://echo", LoadSettings(None, 128, 64, 1, 1, False, 0))
    assert isinstance(backend, FakeBackend)
    m = backend.measure(100, 10, n_threads=1, n_batch=64)
    assert m["pp_tokens"] == 100 and m["tg_tps"] == 20.0
    assert m["pp_ms"] == pytest.approx(100 / m["pp_tps"] * 1000)
    with pytest.raises(CellError, match="n_ctx"):
        backend.measure(120, 10, n_threads=1, n_batch=64)
    with pytest.raises(CellError, match="n_batch"):
        backend.measure(10, 1, n_threads=1, n_batch=128)
    assert backend.measure(10, 0, n_threads=1, n_batch=8)["tg_ms"] == 0.0


@pytest.mark.model
def test_tune_smollm2(tmp_path: Path) -> None:
    # A subprocess: a llama.cpp crash fails this test instead of the session (see test_llama.py).
    r = subprocess.run(
        [sys.executable, "-m", "promptlab", "tune", "smollm2", "--prompt-tokens", "130",
         "--gen-tokens", "8", "--repeats", "1", "--threads", "1,2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "200"},  # rich wraps at 80 columns without a terminal
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    print(r.stdout)
    rows: dict[int, list[float]] = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 4 and cells[0].isdigit():  # threads, n_batch 64, n_batch 128, generate
            rows[int(cells[0])] = [float(c) for c in cells[1:]]
    assert set(rows) == {1, 2}
    assert all(v > 0 for values in rows.values() for v in values)
    snippet = snippet_of(r.stdout)
    (entry,) = snippet["models"]
    assert entry["path"] == "smollm2"
    assert entry["n_threads"] in (1, 2) and entry["n_threads_batch"] in (1, 2)
    assert entry["n_batch"] in (64, 128)
    best = re.search(
        r"best for prompts: n_threads_batch \d, n_batch \d+ \(([\d.]+) tok/s", r.stdout
    )
    assert best is not None and float(best.group(1)) > 1  # real, positive speeds
