"""`promptlab run --ray`: the same rows, cache and resume as a local run, on a real local Ray
cluster with two actors (tests/ starts it once per module: Ray takes ~15 s to start here)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, Project

from promptlab import core
from promptlab.backends import LoadSettings, open_backend
from promptlab.engine.distributed import check_address, shard
from promptlab.errors import InputError
from promptlab.models import BUNDLED

Cli = Callable[..., CliResult]

# Fields that say how fast or where a cell ran, not what it produced. prompt_eval_tokens is
# how much of the prompt the KV cache already held: it depends on which cell ran before it on
# the same process, so the first cell of each actor's shard evaluates more than it would locally.
TIMING = {"latency_ms", "tokens_per_s", "prompt_eval_ms", "eval_ms", "prompt_eval_tokens"}

RULES = {"hello": "hello there", "world": "the world", "alpha": "alpha beta", "gamma": "no"}


def suite_text(model: str, tests: int = 12, n_threads: int = 1) -> str:
    """Two prompts × `tests` tests: generations, a choice check, a failure and a cell error."""
    words = ["hello", "world", "alpha", "gamma", "BOOM"]
    lines = [
        "description: ray suite",
        "prompts:",
        '  - raw: "Say {{ word }} {{ n }}"',
        "    label: say",
        '  - raw: "Please repeat {{ word }} {{ n }} now"',
        "    label: repeat",
        "models:",
        f"  - path: {json.dumps(model)}",
        "    label: m",
        "    n_ctx: 64",
        f"    n_threads: {n_threads}",
        "params: {max_tokens: 16, logprobs: 1}",
        "tests:",
    ]
    for i in range(tests):
        word = words[i % len(words)]
        lines += [
            f"  - vars: {{word: {word}, n: {i}}}",
            "    assert:",
            f"      - {{type: icontains, value: {word}}}",
            "      - {type: choice, value: alpha, choices: [alpha, beta, gamma]}",
        ]
    return "\n".join(lines) + "\n"


def rows_by_cell(folder: Path) -> dict[str, dict[str, Any]]:
    """results.jsonl keyed by cell id, minus timing fields; fails on a duplicated cell."""
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    out = {r["cell_id"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}
    assert len(out) == len(rows), "a cell was written twice"
    return out


def manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """One local two-CPU Ray cluster for the whole module; yields its GCS address. Its session
    files live in a folder of its own (short: Ray's socket paths must fit 107 bytes), so other
    Ray clusters on the machine and `ray start` are left alone."""
    import ray

    temp = tempfile.mkdtemp(prefix="plray-", dir="/tmp")
    context = ray.init(
        _temp_dir=temp,
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        # The workers must import this checkout's promptlab, as the driver does.
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}},
    )
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def rules_model(project: Project, **options: str) -> str:
    path = project.write("rules.json", json.dumps(RULES))
    query = "&".join(["file=rules.json", "fail_on=BOOM", *(f"{k}={v}" for k, v in options.items())])
    assert path.is_file()
    return f"fake://rules?{query}"


def test_shard_cuts_where_neighbours_share_least() -> None:
    texts = ["sys A q1", "sys A q2", "sys A q3", "sys B q1", "sys B q2", "sys B q3"]
    assert shard(texts, 2) == [range(3), range(3, 6)]
    # Off-centre group boundary within a quarter slice: the cut moves to it.
    texts = ["P1 a", "P1 b", "P1 c", "P1 d", "P1 e", "P2 a", "P2 b", "P2 c"]
    assert shard(texts, 2) == [range(5), range(5, 8)]
    # Every slice is non-empty and together they cover the order once.
    for n in range(1, 9):
        parts = shard(texts, n)
        assert len(parts) == n
        assert [i for p in parts for i in p] == list(range(len(texts)))


def test_an_actor_with_another_model_or_build_is_refused() -> None:
    from collections import deque

    from promptlab.engine.distributed.pool import Pool, Slot
    from promptlab.errors import BackendError

    class NoRay:  # settle() never calls Ray: it only compares what the actor reported
        ray = None

    planned = type("M", (), {"label": "m"})()  # only its label is read
    pool = Pool(NoRay(), planned, "tag", "sha-a|build-1")  # type: ignore[arg-type]
    slot = Slot(deque())
    with pytest.raises(BackendError, match=re.escape("on node7 loaded 'sha-a|build-2'")):
        pool.settle(slot, {"identity": "sha-a|build-2", "host": "node7"})
    assert slot.facts is None
    pool.settle(slot, {"identity": "sha-a|build-1", "host": "node7"})
    assert slot.facts is not None


def test_ray_address_checked_and_missing_ray_named(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write("suite.yaml", suite_text("fake://echo", tests=2))
    with pytest.raises(InputError, match="HOST:PORT"):
        check_address("not an address")
    assert check_address("ray://10.0.0.1:10001") == "ray://10.0.0.1:10001"
    bad = cli("run", "suite.yaml", "--ray", "nowhere")
    assert bad.code == 2
    assert "not auto, local, HOST:PORT" in bad.err
    nobody = cli("run", "suite.yaml", "--ray", "127.0.0.1:1")  # fails fast, not after minutes
    assert nobody.code == 2
    assert "--ray 127.0.0.1:1: nothing answers there" in nobody.err
    zero = cli("run", "suite.yaml", "--ray", "local", "--ray-actors", "0")
    assert zero.code == 2
    assert "--ray-actors must be at least 1" in zero.err
    lone = cli("run", "suite.yaml", "--ray-actors", "2")
    assert lone.code == 2
    assert "--ray-actors needs --ray" in lone.err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    missing = cli("run", "suite.yaml", "--ray", "auto")
    assert missing.code == 2
    assert missing.err.strip().splitlines() == [
        "error: --ray needs Ray, which is not installed; install it with: "
        "pip install 'promptlab[ray]'"
    ]
    assert not (project.root / "results").exists()


def test_server_models_are_refused_before_anything_is_written(project: Project, cli: Cli) -> None:
    """Ray actors load GGUF files; a provider: openai model is remote already (no Ray needed
    to see it: the refusal comes before the cluster is joined)."""
    project.write(
        "suite.yaml",
        """
        prompts: ["Say {{ w }}"]
        models:
          - provider: openai
            base_url: http://127.0.0.1:9/v1
            model: m
        tests:
          - vars: {w: hi}
        """,
    )
    r = cli("run", "suite.yaml", "--ray", "local")
    assert r.code == 2
    assert r.err.strip().splitlines() == [
        "error: --ray runs in-process models on the cluster, but model 'm' is served by an "
        "OpenAI-compatible server; run a suite with server models without --ray (raise their "
        "concurrency:)"
    ]
    assert not (project.root / "results").exists()


CRASHER = """
import sys
from promptlab.backends import LoadSettings, Sampling, open_backend
settings = LoadSettings(None, 64, 64, 1, 1, False, 0)
backend = open_backend(sys.argv[1], settings)
for word in ("hello", "world"):
    print(backend.generate(word, False, Sampling(0.0, 0.95, 40, 0.05, 4, (), 0, 1.0)).text)
"""


def test_the_fake_crash_marks_beside_its_rules_and_only_once(tmp_path: Path) -> None:
    """crash_after (test_a_dead_actor_... relies on it): the first process dies at the call,
    the marker beside the rules file lets a second go on, and other modes refuse it."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    spec = f"fake://rules?file={rules}&crash_after=1"

    def attempt() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CRASHER, spec], capture_output=True, text=True, timeout=60
        )

    first = attempt()
    assert first.returncode == 3, first.stderr
    assert first.stdout.splitlines() == ["hello there"]  # died on its 2nd call
    assert (tmp_path / "rules.json.crashed").is_file()
    second = attempt()
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["hello there", "the world"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.json", "rules.json.crashed"]
    settings = LoadSettings(None, 64, 64, 1, 1, False, 0)
    with pytest.raises(InputError, match="crash_after and barrier need rules mode"):
        open_backend("fake://echo?crash_after=1", settings)


def test_help_does_not_import_ray() -> None:
    code = (
        "import sys\nfrom promptlab.cli import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "--ray" in out.stdout


@pytest.mark.timeout(300)
def test_two_actors_give_the_local_rows(project: Project, ray_cluster: str) -> None:
    # barrier=2: both actors enter service together. Without it, on a slow machine the first
    # actor can finish every cell (taking the second's queue, as it should) before the second
    # has loaded, and "both actors worked" would be a race.
    suite = project.write("suite.yaml", suite_text(rules_model(project, sleep_ms="20")))
    together = project.write(
        "together.yaml", suite_text(rules_model(project, sleep_ms="20", barrier="2"))
    )
    local = core.run(suite, out=project.root / "local", cache=core.CacheOptions(use=False))
    remote = core.run(
        together, out=project.root / "ray", cache=core.CacheOptions(use=False), ray="auto"
    )
    assert local.status == remote.status == "complete"
    expected = rows_by_cell(local.folder)
    got = rows_by_cell(remote.folder)
    assert len(got) == 24
    assert got == expected
    statuses = {r["status"] for r in got.values()}
    assert statuses == {"pass", "fail", "error"}  # the suite exercises every path
    assert any(r["logprobs"] for r in got.values())
    (record,) = manifest(remote.folder)["models"]
    assert record["ray"]["actors"] == 2
    assert all(n > 0 for n in record["ray"]["cells_per_actor"])
    assert sum(record["ray"]["cells_per_actor"]) == 24
    assert record["ray"]["actors_replaced"] == 0
    assert record["runtime"]["backend"] == "fake"
    assert manifest(remote.folder)["ray"]["cpus"] == 2
    assert (remote.folder / "report.html").is_file()
    assert remote.stats.passed == local.stats.passed
    assert remote.stats.failed == local.stats.failed
    assert remote.stats.errors == local.stats.errors


@pytest.mark.timeout(300)
def test_the_python_api_runs_on_ray_too(project: Project, ray_cluster: str) -> None:
    import promptlab

    suite = project.write("suite.yaml", suite_text(rules_model(project), tests=4))
    local = promptlab.run(suite, out=project.root / "local", no_cache=True)
    remote = promptlab.run(suite, out=project.root / "ray", no_cache=True, ray="auto", ray_actors=1)
    assert rows_by_cell(remote.folder) == rows_by_cell(local.folder)
    assert remote.manifest["models"][0]["ray"]["actors"] == 1
    assert remote.results.shape == local.results.shape
    with pytest.raises(InputError, match="ray_actors= needs ray="):
        promptlab.run(suite, ray_actors=2)


@pytest.mark.timeout(300)
def test_cache_is_written_by_the_driver_and_serves_a_rerun(
    project: Project, ray_cluster: str
) -> None:
    # Four tests: no cell error (those are never cached, so they would run again).
    suite = project.write("suite.yaml", suite_text(rules_model(project), tests=4))
    db = project.root / "cache.sqlite"
    first = core.run(suite, out=project.root / "a", cache=core.CacheOptions(path=db), ray="auto")
    assert first.status == "complete"
    assert manifest(first.folder)["cache"]["writes"] > 0
    # A local rerun is served by what the Ray run cached, without loading the model ...
    local = core.run(suite, out=project.root / "b", cache=core.CacheOptions(path=db))
    assert all(r["cached"] for r in rows_by_cell(local.folder).values())
    (record,) = manifest(local.folder)["models"]
    assert record["loaded"] is False
    # ... and so is a Ray rerun, which then starts no actor at all.
    again = core.run(suite, out=project.root / "c", cache=core.CacheOptions(path=db), ray="auto")
    rows = rows_by_cell(again.folder)
    assert all(r["cached"] for r in rows.values())
    (record,) = manifest(again.folder)["models"]
    assert record["loaded"] is False
    assert "ray" not in record
    assert manifest(again.folder)["cache"]["hits"] == manifest(local.folder)["cache"]["hits"]
    strip = {"cached"}
    assert {k: {f: v for f, v in r.items() if f not in strip} for k, r in rows.items()} == {
        k: {f: v for f, v in r.items() if f not in strip}
        for k, r in rows_by_cell(first.folder).items()
    }


class StopAfter:
    """A progress callback that presses Ctrl-C after `n` rows (as a person would)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rows = 0

    def start(self, total: int) -> None:
        pass

    def model_loading(self, label: str) -> None:
        pass

    def model_loaded(self, label: str, facts: dict[str, Any]) -> None:
        pass

    def cell_done(self, row: dict[str, Any]) -> None:
        self.rows += 1
        if self.rows == self.n:
            raise KeyboardInterrupt


@pytest.mark.timeout(300)
def test_interrupted_ray_run_resumes_to_the_local_rows(project: Project, ray_cluster: str) -> None:
    suite = project.write("suite.yaml", suite_text(rules_model(project), tests=8))
    no_cache = core.CacheOptions(use=False)
    local = core.run(suite, out=project.root / "local", cache=no_cache)
    stopped = core.run(
        suite, out=project.root / "ray", cache=no_cache, ray="auto", progress=StopAfter(5)
    )
    assert stopped.status == "interrupted"
    assert len(rows_by_cell(stopped.folder)) == 5
    resumed = core.resume(stopped.folder, ray="auto")
    assert resumed.status == "complete"
    assert rows_by_cell(resumed.folder) == rows_by_cell(local.folder)
    assert manifest(resumed.folder)["resumed"][0]["cells_left"] == 11


@pytest.mark.timeout(300)
def test_a_dead_actor_is_replaced_and_its_cells_retried(project: Project, ray_cluster: str) -> None:
    flag = project.root / "rules.json.crashed"  # the fake backend's marker, beside its rules
    reference = project.write("ref.yaml", suite_text(rules_model(project)))
    # The first actor to reach its 3rd cell exits (os._exit), mid-chunk, with work queued.
    crashing = rules_model(project, sleep_ms="20", crash_after="2")
    suite = project.write("suite.yaml", suite_text(crashing))
    no_cache = core.CacheOptions(use=False)
    local = core.run(reference, out=project.root / "local", cache=no_cache)
    remote = core.run(suite, out=project.root / "ray", cache=no_cache, ray="auto")
    assert flag.exists(), "no actor crashed: the test proved nothing"
    assert remote.status == "complete"
    got = rows_by_cell(remote.folder)  # fails on a duplicated cell
    assert got == rows_by_cell(local.folder)  # nothing lost
    (record,) = manifest(remote.folder)["models"]
    assert record["ray"]["actors_replaced"] == 1
    assert record["ray"]["cells_retried"] >= 1
    assert sum(record["ray"]["cells_per_actor"]) == 24


@pytest.mark.timeout(300)
def test_judges_on_the_model_under_test_and_on_the_driver(
    project: Project, ray_cluster: str
) -> None:
    judge = "fake://reply?text=" + json.dumps({"reason": "fine", "pass": True, "score": 0.75})
    lines = [
        'prompts: ["Rate {{ n }}"]',
        f"models: [{{path: {json.dumps(judge)}, label: m, n_threads: 1}}]",
        "tests:",
    ]
    for i in range(6):
        lines += [
            f"  - vars: {{n: {i}}}",
            "    assert:",
            "      - {type: llm-rubric, value: is a verdict}",  # judged by the model under test
            f"      - {{type: llm-rubric, value: is fine, provider: {json.dumps(judge + '&x=1')}}}",
        ]
    suite = project.write("suite.yaml", "\n".join(lines) + "\n")
    no_cache = core.CacheOptions(use=False)
    local = core.run(suite, out=project.root / "local", cache=no_cache)
    remote = core.run(suite, out=project.root / "ray", cache=no_cache, ray="auto")
    rows = rows_by_cell(remote.folder)
    assert rows == rows_by_cell(local.folder)
    assert all(r["status"] == "pass" for r in rows.values())
    assert all(c["details"]["judge_reason"] == "fine" for r in rows.values() for c in r["checks"])
    roles = [m["role"] for m in manifest(remote.folder)["models"]]
    assert roles == ["under test", "judge"]  # the provider's judge loaded once, on the driver


@pytest.mark.timeout(300)
def test_cli_joins_a_cluster_by_address(project: Project, ray_cluster: str) -> None:
    suite = project.write("suite.yaml", suite_text(rules_model(project), tests=4))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["run", str(suite), "-o", "out", "--no-cache", "--ray", ray_cluster, "--ray-actors", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "promptlab", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=project.root,
        check=False,
    )
    assert proc.returncode == 100, proc.stderr  # the suite has failing cells by design
    (record,) = manifest(project.root / "out")["models"]
    assert record["ray"]["actors"] == 1
    assert len(rows_by_cell(project.root / "out")) == 8
    assert manifest(project.root / "out")["ray"]["address"] == ray_cluster


@pytest.mark.model
@pytest.mark.timeout(500)
def test_real_model_rows_match_a_local_run(project: Project, ray_cluster: str) -> None:
    path = BUNDLED["smollm2"].locate()
    if path is None:
        pytest.fail(f"smollm2 is not installed: {BUNDLED['smollm2'].install}")
    project.write(
        "suite.yaml",
        f"""
        description: smollm2 on ray
        prompts:
          - raw: "Q: What is the capital of {{{{ country }}}}? A:"
            label: qa
          - raw: "Name the capital city of {{{{ country }}}}."
            label: terse
        models:
          - path: {json.dumps(str(path))}
            label: smollm2
            chat: false
            n_ctx: 256
            n_threads: 1
        params: {{max_tokens: 8, temperature: 0}}
        tests:
          - vars: {{country: France}}
            assert: [{{type: icontains, value: Paris}}]
          - vars: {{country: Japan}}
            assert: [{{type: choice, value: " Tokyo", choices: [" Tokyo", " Osaka"]}}]
          - vars: {{country: Italy}}
            assert: [{{type: icontains, value: Rome}}]
        """,
    )
    suite = project.root / "suite.yaml"
    no_cache = core.CacheOptions(use=False)
    local = core.run(suite, out=project.root / "local", cache=no_cache)
    remote = core.run(suite, out=project.root / "ray", cache=no_cache, ray="auto")
    rows = rows_by_cell(remote.folder)
    assert rows == rows_by_cell(local.folder)
    generated = [r for r in rows.values() if r["completion_tokens"]]
    assert len(generated) == 4  # the choice-only test generates nothing
    assert all(r["output"].strip() for r in generated)
    picks = [c for r in rows.values() for c in r["checks"] if c["type"] == "choice"]
    assert len(picks) == 2
    assert all(set(c["details"]["logprobs"]) == {" Tokyo", " Osaka"} for c in picks)
    (record,) = manifest(remote.folder)["models"]
    assert record["ray"]["actors"] == 2
    # Each cell computed once. Not "each actor computed some": six short cells can all be done
    # by the first actor to load before the second has (an idle actor takes the queue of one
    # still loading); test_two_actors_give_the_local_rows, with slower cells, checks the split.
    assert sum(record["ray"]["cells_per_actor"]) == 6, record["ray"]
    assert record["runtime"]["backend"] != "fake"
