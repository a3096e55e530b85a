"""The experiment engine's benchmarks (issue 4): prefix reuse, the result cache, scale, start-up.

    .venv/bin/python benchmarks/bench_engine.py prefix  [--rounds 3] [--tests 40]
    .venv/bin/python benchmarks/bench_engine.py cache   [--topics 60] [--warm 5]
    .venv/bin/python benchmarks/bench_engine.py scale   [--rounds 3] [--tests 100 --prompts 100]
    .venv/bin/python benchmarks/bench_engine.py startup [--runs 15]

Every ratio is measured within one invocation; where two things are compared they alternate
round by round (A B, B A, ...) so drift on the machine hits both alike, and medians are printed.
`others` is the share of all CPUs that other processes (and hypervisor steal) used meanwhile,
from /proc/stat minus this process and its children: check it before trusting a figure.

prefix   A few-shot suite on the bundled SmolLM2 (raw completion, greedy, max_tokens 8): two
         templates, each a different few-shot block of >= 300 tokens shared by its 40 tests.
         A: promptlab, `core.run(--no-cache)`: prefix-aware order (each template's cells back
            to back), timed as wall minus model load.
         B: naive in-order evaluation of the same cells, templates interleaved (A t1, B t1,
            A t2, ...): `open_backend` + `backend.generate` with the same settings, timed
            around the loop (model loaded before, untimed). Same engine, only the order differs.
         Target: B / A >= 3. Prints the shared prefix in tokens (the model's own tokenizer) and
         the prompt tokens evaluated vs reused on both sides, and compares the outputs.
cache    CLI subprocesses (`promptlab run SUITE -o DIR`) on a fresh temp project: a cold run
         (empty cache) of 2 chat templates x --topics tests on SmolLM2, max_tokens 32; then
         --warm unchanged reruns (median); then one template file edited and run again: only
         that template's cells may miss. Target: cold / warm >= 50.
scale    10,000 cells (--tests x --prompts) on the fake backend, each configuration in its own
         child process: `core.run` with --no-cache, with a cold cache, with a warm cache, and the
         CLI end to end (`promptlab run --no-cache`). Peak RSS per child (wait4; on Linux it
         includes this launcher's ~18 MB high-water mark, carried over fork + exec, so it is an
         upper bound; the core.run children also report their own VmHWM), time per cell for the
         engine (first to last cell, from a Progress hook) and for the reports. `backend` is the
         sum of the rows' latency_ms (a cached row keeps its original generation's latency).
         Targets: peak RSS < 300 MB; engine overhead < 2 ms per cell.
startup  `promptlab --help` and `promptlab validate` on each suite in evals/, --runs each,
         interleaved; medians. Target: --help < 0.3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROMPTLAB = str(BIN / "promptlab") if (BIN / "promptlab").exists() else "promptlab"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def say(line: str = "") -> None:
    print(line, flush=True)


# --- measuring -----------------------------------------------------------------------------


class CpuMeter:
    """Share of all CPUs used by other processes over an interval (Linux; None elsewhere)."""

    def __init__(self) -> None:
        self.start = self._snap()
        self.t0 = time.perf_counter()

    @staticmethod
    def _snap() -> tuple[float, float] | None:
        try:
            first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        v = [int(x) for x in first[1:9]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / _TICK
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system

    def others(self) -> float | None:
        end = self._snap()
        wall = time.perf_counter() - self.t0
        if self.start is None or end is None or wall <= 0:
            return None
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(0.0, other / (wall * (os.cpu_count() or 1)))


def pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class ChildResult:
    wall_s: float
    maxrss_mb: float  # peak resident set of that one child (wait4)
    returncode: int
    stdout: str
    stderr: str


def run_child(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> ChildResult:
    """Run a command, timing it and reading its own peak RSS from wait4 (Linux/macOS)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # ru_maxrss: KiB on Linux, bytes on macOS.
        scale = 1 / (1 << 20) if sys.platform == "darwin" else 1 / 1024
        return ChildResult(
            wall,
            usage.ru_maxrss * scale,
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in lscpu.splitlines()
                if ln.startswith("Model name")
            ),
            "",
        )
    return f"{os.cpu_count()} CPUs ({model or 'unknown model'}), Python {sys.version.split()[0]}"


def new_project() -> Path:
    """A throwaway project folder (marked as a git work tree, so it is its own project root)."""
    root = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    (root / ".git").mkdir()
    return root


def rows_of(folder: Path) -> list[dict[str, Any]]:
    from promptlab.engine.store import read_results  # noqa: PLC0415

    return read_results(folder)


# --- prefix --------------------------------------------------------------------------------

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"),
    ("Austria", "Vienna"), ("Switzerland", "Bern"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"),
    ("Norway", "Oslo"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"), ("Ireland", "Dublin"),
    ("Greece", "Athens"), ("Hungary", "Budapest"), ("Czechia", "Prague"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("India", "New Delhi"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"), ("the Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"),
    ("South Korea", "Seoul"), ("Pakistan", "Islamabad"),
]  # fmt: skip
CONTINENTS = {
    "France": "Europe", "Germany": "Europe", "Italy": "Europe", "Spain": "Europe",
    "Portugal": "Europe", "the Netherlands": "Europe", "Belgium": "Europe", "Austria": "Europe",
    "Switzerland": "Europe", "Poland": "Europe", "Sweden": "Europe", "Norway": "Europe",
    "Denmark": "Europe", "Finland": "Europe", "Ireland": "Europe", "Greece": "Europe",
    "Hungary": "Europe", "Czechia": "Europe", "Romania": "Europe", "Bulgaria": "Europe",
    "Japan": "Asia", "China": "Asia", "India": "Asia", "Thailand": "Asia", "Vietnam": "Asia",
    "Indonesia": "Asia", "the Philippines": "Asia", "Malaysia": "Asia", "South Korea": "Asia",
    "Pakistan": "Asia",
}  # fmt: skip
TEST_COUNTRIES = [
    "Egypt", "Kenya", "Nigeria", "Morocco", "Ghana", "Ethiopia", "Algeria", "Tunisia",
    "Senegal", "Angola", "Brazil", "Argentina", "Chile", "Peru", "Colombia", "Venezuela",
    "Ecuador", "Bolivia", "Uruguay", "Paraguay", "Canada", "Mexico", "Cuba", "Jamaica", "Panama",
    "Australia", "New Zealand", "Fiji", "Iran", "Iraq", "Turkey", "Israel", "Jordan",
    "Saudi Arabia", "Qatar", "Nepal", "Mongolia", "Ukraine", "Croatia", "Iceland",
]  # fmt: skip


def threads_yaml(threads: int | None) -> str:
    return f"    n_threads: {threads}\n" if threads else ""


def prefix_project(n_tests: int, threads: int | None = None, chunk: int | None = None) -> Path:
    root = new_project()
    capital = "Answer each question with the name of the capital city only.\n\n" + "".join(
        f"Q: What is the capital of {c}?\nA: {city}\n\n" for c, city in CAPITALS
    )
    continent = "For each country, name the continent it lies on.\n\n" + "".join(
        f"Country: {c}\nContinent: {CONTINENTS[c]}\n\n" for c, _ in CAPITALS
    )
    (root / "prompts").mkdir()
    (root / "prompts" / "capital.txt").write_text(
        capital + "Q: What is the capital of {{ country }}?\nA:", encoding="utf-8"
    )
    (root / "prompts" / "continent.txt").write_text(
        continent + "Country: {{ country }}\nContinent:", encoding="utf-8"
    )
    tests = "".join(f"  - vars: {{country: {c}}}\n" for c in TEST_COUNTRIES[:n_tests])
    (root / "suite.yaml").write_text(
        "description: prefix reuse benchmark\n"
        "prompts:\n"
        "  - id: file://prompts/capital.txt\n    label: capital\n"
        "  - id: file://prompts/continent.txt\n    label: continent\n"
        "models:\n  - path: smollm2\n    chat: false\n    n_ctx: 1024\n"
        f"{threads_yaml(threads)}"
        f"{f'    prefix_chunk: {chunk}{chr(10)}' if chunk else ''}"
        "params:\n  temperature: 0\n  max_tokens: 8\n  stop: ['\\n']\n"
        f"tests:\n{tests}",
        encoding="utf-8",
    )
    return root


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs):
            return i
    return n


def bench_prefix(args: argparse.Namespace) -> int:
    from promptlab import core  # noqa: PLC0415
    from promptlab.backends import open_backend  # noqa: PLC0415
    from promptlab.backends.llama import LlamaBackend  # noqa: PLC0415
    from promptlab.engine.store import read_manifest  # noqa: PLC0415

    project = prefix_project(args.tests, args.threads, args.prefix_chunk)
    suite = project / "suite.yaml"
    plan = core.prepare(suite)
    model = plan.models[0]
    # Naive order: suite order, templates interleaved per test (A t1, B t1, A t2, ...).
    naive = sorted(plan.cells, key=lambda c: (c.test.index, c.prompt.label != "capital"))
    say(f"suite: {len(plan.cells)} cells = {args.tests} tests x 2 templates, model {model.label}")
    say(f"load settings: {model.settings}")
    say(f"sampling: {naive[0].sampling}")

    def opened() -> LlamaBackend:
        backend = open_backend(model.path, model.settings)
        assert isinstance(backend, LlamaBackend)
        return backend

    probe = opened()
    for label in ("capital", "continent"):
        toks = [probe.tokenize(c.text, c.add_bos) for c in plan.cells if c.prompt.label == label]
        say(
            f"template {label}: shared prefix {common_prefix(toks)} tokens (SmolLM2 tokenizer), "
            f"prompts {min(map(len, toks))}-{max(map(len, toks))} tokens"
        )
    say(
        f"prompt fill: {probe.info.facts['fill_mode']} (canonical chunk {probe.info.facts['prefix_chunk']})"
    )
    probe.close()

    def run_promptlab(i: int) -> dict[str, Any]:
        out = project / f"run{i}"
        meter = CpuMeter()
        t0 = time.perf_counter()
        result = core.run(suite, out=out, argv=["bench_engine"], cache=core.CacheOptions(use=False))
        wall = time.perf_counter() - t0
        others = meter.others()
        if result.status != "complete":
            raise SystemExit(f"promptlab run {result.status}: {result.error}")
        m = read_manifest(out)
        load = sum(float(x["load_ms"]) for x in m["models"]) / 1000
        rows = rows_of(out)
        return {
            "time": wall - load,
            "wall": wall,
            "reuse": m["prefix_reuse"],
            "outputs": {r["cell_id"]: r["output"] for r in rows},
            "others": others,
        }

    def run_naive() -> dict[str, Any]:
        backend = opened()  # a fresh KV cache each round, loaded outside the timing
        try:
            meter = CpuMeter()
            t0 = time.perf_counter()
            outputs, total, evaluated = {}, 0, 0
            for cell in naive:
                assert cell.sampling is not None
                gen = backend.generate(cell.text, cell.add_bos, cell.sampling)
                outputs[cell.id] = gen.text
                total += gen.prompt_tokens
                evaluated += gen.prompt_eval_tokens or 0
            wall = time.perf_counter() - t0
            others = meter.others()
        finally:
            backend.close()
        reuse = {"prompt_tokens": total, "evaluated": evaluated, "reused": total - evaluated}
        return {"time": wall, "reuse": reuse, "outputs": outputs, "others": others}

    say(f"{args.rounds} rounds, order alternating (promptlab first in odd rounds); seconds")
    say()
    say(
        f"{'round':>5}  {'promptlab':>9}  {'naive':>8}  {'ratio':>6}  {'mismatch':>8}  {'others':>11}"
    )
    pl_times: list[float] = []
    nv_times: list[float] = []
    ratios: list[float] = []
    pl: dict[str, Any] = {}
    nv: dict[str, Any] = {}
    mismatches = 0
    for i in range(1, args.rounds + 1):
        if i % 2:
            pl, nv = run_promptlab(i), run_naive()
        else:
            nv, pl = run_naive(), run_promptlab(i)
        bad = sum(pl["outputs"].get(k) != v for k, v in nv["outputs"].items())
        mismatches += bad
        pl_times.append(pl["time"])
        nv_times.append(nv["time"])
        ratios.append(nv["time"] / pl["time"])
        say(
            f"{i:>5}  {pl['time']:>9.2f}  {nv['time']:>8.2f}  {ratios[-1]:>6.2f}  {bad:>8}  "
            f"{pct(pl['others']):>5}/{pct(nv['others']):>5}"
        )
    say()
    for name, r in (("promptlab", pl["reuse"]), ("naive", nv["reuse"])):
        share = r["reused"] / r["prompt_tokens"] if r["prompt_tokens"] else 0.0
        say(
            f"prompt tokens, {name:>9}: {r['prompt_tokens']:,} in prompts, {r['evaluated']:,} "
            f"evaluated, {r['reused']:,} reused ({share:.0%})"
        )
    ratio = med(nv_times) / med(pl_times)
    verdict = "meets" if ratio >= 3 else "MISSES"
    say(
        f"median promptlab {med(pl_times):.2f} s (wall minus model load), median naive "
        f"{med(nv_times):.2f} s"
    )
    say(f"HEADLINE ratio median(naive) / median(promptlab) = {ratio:.2f}  ({verdict} target >= 3)")
    say(f"median of per-round ratios {med(ratios):.2f}; output mismatches {mismatches}")
    shutil.rmtree(project, ignore_errors=True)
    return 1 if mismatches else 0


# --- cache ---------------------------------------------------------------------------------

TOPICS = [
    "the moon", "volcanoes", "honey bees", "the Sahara", "glaciers", "octopuses", "the Nile",
    "lighthouses", "coffee", "the Roman Empire", "penguins", "thunderstorms", "bamboo",
    "the printing press", "coral reefs", "owls", "the Eiffel Tower", "chess", "tea", "comets",
    "whales", "the Great Wall", "tulips", "electricity", "sharks", "the Amazon rainforest",
    "bicycles", "Mount Everest", "the violin", "salt", "elephants", "rainbows", "the piano",
    "deserts", "submarines", "maple syrup", "the Moon landing", "hummingbirds", "clocks",
    "the Pacific Ocean", "bread", "wolves", "the telescope", "origami", "tigers", "bridges",
    "cheese", "the Arctic", "kites", "dolphins", "the alphabet", "mushrooms", "trains",
    "the Olympics", "chocolate", "spiders", "windmills", "the Milky Way", "rice", "jellyfish",
    "libraries", "the compass", "sunflowers", "pyramids", "snow", "crows", "paper", "islands",
    "maps", "the camel",
]  # fmt: skip


def cache_project(n_topics: int, threads: int | None = None) -> Path:
    root = new_project()
    (root / "prompts").mkdir()
    (root / "prompts" / "sentence.j2").write_text(
        "Write one sentence about {{ topic }}.", encoding="utf-8"
    )
    (root / "prompts" / "fact.j2").write_text(
        "Tell me one short fun fact about {{ topic }}.", encoding="utf-8"
    )
    tests = "".join(f"  - vars: {{topic: {t}}}\n" for t in TOPICS[:n_topics])
    (root / "suite.yaml").write_text(
        "description: cache benchmark\n"
        "prompts:\n"
        "  - id: file://prompts/sentence.j2\n    label: sentence\n"
        "  - id: file://prompts/fact.j2\n    label: fact\n"
        "models:\n  - path: smollm2\n    n_ctx: 1024\n"
        f"{threads_yaml(threads)}"
        "params:\n  temperature: 0\n  max_tokens: 32\n"
        "defaultTest:\n  assert:\n    - type: not-icontains\n      value: as an AI\n"
        f"tests:\n{tests}",
        encoding="utf-8",
    )
    return root


def cli_run(project: Path, out: str) -> tuple[ChildResult, list[dict[str, Any]], dict[str, Any]]:
    from promptlab.engine.store import read_manifest  # noqa: PLC0415

    res = run_child([PROMPTLAB, "run", "suite.yaml", "-o", out], project)
    if res.returncode not in (0, 100):
        raise SystemExit(f"promptlab run exited {res.returncode}: {res.stderr[-2000:]}")
    return res, rows_of(project / out), read_manifest(project / out)


def bench_cache(args: argparse.Namespace) -> int:
    if len(TOPICS) < args.topics:
        raise SystemExit(f"--topics at most {len(TOPICS)}")
    project = cache_project(args.topics, args.threads)
    cells = 2 * args.topics
    say(f"project {project}: {cells} cells = {args.topics} tests x 2 chat templates, SmolLM2,")
    say("max_tokens 32, greedy; each run is `promptlab run suite.yaml -o DIR` in a subprocess")
    say(f"cache: {project}/.promptlab/cache.sqlite (empty at the start)")
    say()

    meter = CpuMeter()
    cold, rows, m = cli_run(project, "cold")
    say(
        f"cold run:   {cold.wall_s:7.2f} s  rows {len(rows)}, cached {sum(bool(r['cached']) for r in rows)}, "
        f"model load {sum(float(x.get('load_ms', 0)) for x in m['models']):.0f} ms, "
        f"cache {m['cache']['hits']} hits / {m['cache']['misses']} misses, others {pct(meter.others())}"
    )
    warm_times: list[float] = []
    for i in range(1, args.warm + 1):
        meter = CpuMeter()
        warm, rows, m = cli_run(project, f"warm{i}")
        warm_times.append(warm.wall_s)
        loaded = [x for x in m["models"] if x.get("loaded", True) and "load_ms" in x]
        say(
            f"rerun {i}:    {warm.wall_s:7.2f} s  rows {len(rows)}, cached "
            f"{sum(bool(r['cached']) for r in rows)}, models loaded {len(loaded)}, cache "
            f"{m['cache']['hits']} hits / {m['cache']['misses']} misses, others {pct(meter.others())}"
        )
    ratio = cold.wall_s / med(warm_times)
    verdict = "meets" if ratio >= 50 else "MISSES"
    say(
        f"HEADLINE cold / median(rerun) = {cold.wall_s:.2f} / {med(warm_times):.2f} = "
        f"{ratio:.1f}x  ({verdict} target >= 50x)"
    )

    fixed = [
        run_child(
            [
                sys.executable,
                "-c",
                "import promptlab.cli, promptlab.core, promptlab.reports.tables",
            ],
            project,
        ).wall_s
        for _ in range(3)
    ]
    say(
        f"for scale: python + importing promptlab's core and report modules alone takes "
        f"{med(fixed):.2f} s (median of 3)"
    )

    template = project / "prompts" / "fact.j2"
    template.write_text("Tell me one short, surprising fact about {{ topic }}.", encoding="utf-8")
    meter = CpuMeter()
    edit, rows, m = cli_run(project, "edited")
    rerun = [r for r in rows if not r["cached"]]
    by_prompt = sorted({r["prompt"] for r in rerun})
    ok = by_prompt == ["fact"] and len(rerun) == args.topics
    say(
        f"after editing prompts/fact.j2: {edit.wall_s:.2f} s, {len(rerun)} of {len(rows)} rows "
        f"cached=false, all from template(s) {by_prompt}; cache {m['cache']['hits']} hits / "
        f"{m['cache']['misses']} misses; others {pct(meter.others())}"
    )
    say(f"only the edited template's cells reran: {'yes' if ok else 'NO'}")
    shutil.rmtree(project, ignore_errors=True)
    return 0 if ok else 1


# --- scale ---------------------------------------------------------------------------------


def scale_project(n_tests: int, n_prompts: int) -> Path:
    root = new_project()
    prompts = "".join(
        f'  - raw: "Prompt {i}: repeat {{{{ word }}}}"\n    label: p{i}\n' for i in range(n_prompts)
    )
    tests = "".join(
        f"  - vars: {{word: w{i}}}\n    assert:\n      - type: icontains\n"
        f'        value: "{{{{ word }}}}"\n'
        for i in range(n_tests)
    )
    (root / "suite.yaml").write_text(
        "description: scale benchmark\n"
        f"prompts:\n{prompts}"
        "models:\n  - path: fake://echo\n    label: fake\n    n_ctx: 256\n"
        "params:\n  max_tokens: 16\n"
        f"tests:\n{tests}",
        encoding="utf-8",
    )
    return root


class TimingProgress:
    """Records when the engine starts, and when the first and the last cell finish."""

    def __init__(self, total: int = 0) -> None:
        self.start_t = 0.0
        self.first_t = 0.0
        self.last_t = 0.0
        self.cells = 0
        self.total = total
        self.rss_start = 0.0  # peak RSS so far (MB) when the engine starts / after the last cell
        self.rss_last = 0.0

    def start(self, total: int) -> None:
        self.start_t = time.perf_counter()
        self.total = total
        self.rss_start = peak_rss_mb()

    def model_loading(self, label: str) -> None:
        pass

    def model_loaded(self, label: str, facts: dict[str, Any]) -> None:
        pass

    def cell_done(self, row: dict[str, Any]) -> None:
        now = time.perf_counter()
        if not self.cells:
            self.first_t = now
        self.last_t = now
        self.cells += 1
        if self.cells == self.total:
            self.rss_last = peak_rss_mb()


def vm_hwm_mb() -> float | None:
    """This process's own peak RSS (Linux VmHWM): unlike ru_maxrss, it does not start from the
    parent's high-water mark, which Linux carries over fork + exec."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return None


def peak_rss_mb() -> float:
    import resource  # noqa: PLC0415 - POSIX only

    scale = 1 / (1 << 20) if sys.platform == "darwin" else 1 / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def scale_child(args: argparse.Namespace) -> int:
    """In a child process: one core.run; prints a JSON line of phase timings."""
    import promptlab.reports.tables  # noqa: F401, PLC0415 - imported up front, as a run would
    from promptlab import core  # noqa: PLC0415

    rss_before = peak_rss_mb()
    progress = TimingProgress()
    cache = core.CacheOptions(use=not args.no_cache, path=args.cache_db)
    profiler = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = core.run(args.suite, out=args.out, progress=progress, argv=["bench"], cache=cache)
    if profiler is not None:
        profiler.disable()
    t_end = time.perf_counter()
    hwm = vm_hwm_mb()
    rows = rows_of(args.out)
    latency = sum(float(r["latency_ms"]) for r in rows) / 1000
    report = {
        "status": result.status,
        "cells": progress.cells,
        "cached": sum(bool(r["cached"]) for r in rows),
        "plan_s": progress.start_t - t0,
        "engine_s": progress.last_t - progress.start_t,
        "backend_s": latency,  # inside generate_cached: the fake backend, or the cache lookup
        "reports_s": t_end - progress.last_t,
        "total_s": t_end - t0,
        "rss_before_run_mb": rss_before,  # peak RSS so far: after imports
        "rss_engine_start_mb": progress.rss_start,  # ... after planning
        "rss_engine_end_mb": progress.rss_last,  # ... after the last cell (before the reports)
        "vm_hwm_mb": hwm,
    }
    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(args.profile)
        stats.dump_stats(str(args.out / "profile.pstats"))
        print(text.getvalue(), file=sys.stderr)
    print(json.dumps(report))
    return 0 if result.status == "complete" else 1


def bench_scale(args: argparse.Namespace) -> int:
    n = args.tests * args.prompts
    project = scale_project(args.tests, args.prompts)
    suite = project / "suite.yaml"
    script = str(Path(__file__).resolve())
    say(f"suite: {n:,} cells = {args.tests} tests x {args.prompts} prompts x 1 fake://echo model")
    say("each configuration is one child process; peak RSS from wait4; times in seconds")

    def child(name: str, out: Path, extra: list[str]) -> dict[str, Any]:
        res = run_child(
            [sys.executable, script, "_scale-child", str(suite), str(out), *extra], project
        )
        if res.returncode != 0:
            raise SystemExit(f"{name}: child exited {res.returncode}: {res.stderr[-3000:]}")
        data: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        data["wall_s"], data["rss_mb"] = res.wall_s, res.maxrss_mb
        return data

    def cli(out: Path) -> dict[str, Any]:
        res = run_child([PROMPTLAB, "run", str(suite), "-o", str(out), "--no-cache"], project)
        if res.returncode != 0:
            raise SystemExit(f"cli: exited {res.returncode}: {res.stderr[-3000:]}")
        return {"wall_s": res.wall_s, "rss_mb": res.maxrss_mb, "cells": len(rows_of(out))}

    warm_db = project / "warm.sqlite"
    child("setup", project / "setup", ["--cache-db", str(warm_db)])  # fills the warm cache
    configs: list[tuple[str, Callable[[int], dict[str, Any]]]] = [
        ("no-cache", lambda r: child("no-cache", project / f"nc{r}", ["--no-cache"])),
        (
            "cache cold",
            lambda r: child(
                "cold", project / f"cold{r}", ["--cache-db", str(project / f"c{r}.db")]
            ),
        ),
        ("cache warm", lambda r: child("warm", project / f"warm{r}", ["--cache-db", str(warm_db)])),
        ("CLI no-cache", lambda r: cli(project / f"cli{r}")),
    ]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in configs}
    say()
    header = (
        f"{'round':>5}  {'config':<12} {'total':>6} {'plan':>6} {'engine':>7} {'backend':>7} "
        f"{'reports':>7} {'eng ms/cell':>11} {'ovh ms/cell':>11} {'rep ms/cell':>11} "
        f"{'peak RSS MB':>11} {'others':>6}"
    )
    say(header)
    say("-" * len(header))
    for r in range(1, args.rounds + 1):
        shift = (r - 1) % len(configs)
        for name, fn in configs[shift:] + configs[:shift]:
            meter = CpuMeter()
            d = fn(r)
            d["others"] = meter.others()
            results[name].append(d)
            if "engine_s" in d:
                say(
                    f"{r:>5}  {name:<12} {d['total_s']:>6.2f} {d['plan_s']:>6.2f} "
                    f"{d['engine_s']:>7.2f} {d['backend_s']:>7.2f} {d['reports_s']:>7.2f} "
                    f"{d['engine_s'] / n * 1000:>11.3f} "
                    f"{(d['engine_s'] - d['backend_s']) / n * 1000:>11.3f} "
                    f"{d['reports_s'] / n * 1000:>11.3f} {d['rss_mb']:>11.1f} {pct(d['others']):>6}"
                )
            else:
                say(
                    f"{r:>5}  {name:<12} {d['wall_s']:>6.2f} {'':>6} {'':>7} {'':>7} {'':>7} "
                    f"{'':>11} {'':>11} {'':>11} {d['rss_mb']:>11.1f} {pct(d['others']):>6}"
                )
    say()
    say("medians (engine = first to last cell; ms/cell over all cells; ovh = engine minus the")
    say("time inside generate_cached, i.e. promptlab's own per-cell work around the backend):")
    worst_rss = 0.0
    worst_engine = 0.0
    for name, ds in results.items():
        worst_rss = max(worst_rss, *(d["rss_mb"] for d in ds))
        if "engine_s" in ds[0]:
            eng = med([d["engine_s"] / n * 1000 for d in ds])
            worst_engine = max(worst_engine, eng)
            say(
                f"  {name:<12} engine {eng:.3f} ms/cell, overhead "
                f"{med([(d['engine_s'] - d['backend_s']) / n * 1000 for d in ds]):.3f} ms/cell, "
                f"reports {med([d['reports_s'] / n * 1000 for d in ds]):.3f} ms/cell, plan "
                f"{med([d['plan_s'] for d in ds]):.2f} s, total {med([d['total_s'] for d in ds]):.2f} s, "
                f"peak RSS {med([d['rss_mb'] for d in ds]):.1f} MB (peak so far after imports "
                f"{med([d['rss_before_run_mb'] for d in ds]):.1f}, after planning "
                f"{med([d['rss_engine_start_mb'] for d in ds]):.1f}, after the last cell "
                f"{med([d['rss_engine_end_mb'] for d in ds]):.1f} MB; VmHWM "
                f"{med([d['vm_hwm_mb'] or 0.0 for d in ds]):.1f} MB), cached rows {ds[0]['cached']}"
            )
        else:
            say(
                f"  {name:<12} wall {med([d['wall_s'] for d in ds]):.2f} s = "
                f"{med([d['wall_s'] for d in ds]) / n * 1000:.3f} ms/cell end to end, peak RSS "
                f"{med([d['rss_mb'] for d in ds]):.1f} MB, rows {ds[0]['cells']}"
            )
    say(
        f"HEADLINE peak RSS (worst child) {worst_rss:.1f} MB "
        f"({'meets' if worst_rss < 300 else 'MISSES'} target < 300 MB); engine time per cell "
        f"(worst configuration median) {worst_engine:.3f} ms "
        f"({'meets' if worst_engine < 2 else 'MISSES'} target < 2 ms)"
    )
    if args.small:
        small = scale_project(max(1, args.tests // 10), args.prompts)
        res = run_child(
            [
                sys.executable,
                script,
                "_scale-child",
                str(small / "suite.yaml"),
                str(small / "o"),
                "--no-cache",
            ],
            small,
        )
        d = json.loads(res.stdout.strip().splitlines()[-1])
        say(
            f"flatness: the same with {d['cells']:,} cells (no-cache): peak RSS {res.maxrss_mb:.1f} MB "
            f"(after imports {d['rss_before_run_mb']:.1f}, after planning "
            f"{d['rss_engine_start_mb']:.1f}, after the last cell {d['rss_engine_end_mb']:.1f}), "
            f"engine {d['engine_s'] / d['cells'] * 1000:.3f} ms/cell"
        )
        shutil.rmtree(small, ignore_errors=True)
    shutil.rmtree(project, ignore_errors=True)
    return 0


# --- startup -------------------------------------------------------------------------------


def suites_in_evals() -> list[Path]:
    """The suites in evals/ (test files such as mc_questions.yaml are not suites)."""
    out = []
    for path in sorted((ROOT / "evals").glob("*.yaml")):
        res = subprocess.run(
            [PROMPTLAB, "validate", str(path)], cwd=ROOT, capture_output=True, check=False
        )
        if res.returncode == 0:
            out.append(path)
        else:
            say(f"skipping {path.relative_to(ROOT)}: validate exits {res.returncode} (not a suite)")
    return out


def bench_startup(args: argparse.Namespace) -> int:
    commands: list[tuple[str, list[str]]] = [
        ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
        ("promptlab --help", [PROMPTLAB, "--help"]),
    ]
    commands += [
        (
            f"promptlab validate {p.relative_to(ROOT)}",
            [PROMPTLAB, "validate", str(p.relative_to(ROOT))],
        )
        for p in suites_in_evals()
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in commands}
    rss: dict[str, list[float]] = {name: [] for name, _ in commands}
    meter = CpuMeter()
    for r in range(args.runs):
        shift = r % len(commands)
        for name, argv in commands[shift:] + commands[:shift]:
            res = run_child(argv, ROOT)
            if res.returncode != 0:
                raise SystemExit(f"{name}: exit {res.returncode}: {res.stderr}")
            times[name].append(res.wall_s)
            rss[name].append(res.maxrss_mb)
    others = meter.others()
    say(f"{args.runs} runs of each, interleaved; seconds; others {pct(others)} over the whole loop")
    say(f"{'command':<44} {'median':>7} {'min':>7} {'max':>7} {'peak RSS MB':>11}")
    for name, _ in commands:
        ts = times[name]
        say(f"{name:<44} {med(ts):>7.3f} {min(ts):>7.3f} {max(ts):>7.3f} {med(rss[name]):>11.1f}")
    helps = med(times["promptlab --help"])
    say(
        f"HEADLINE promptlab --help median {helps:.3f} s "
        f"({'meets' if helps < 0.3 else 'MISSES'} target < 0.3 s)"
    )
    return 0


# --- main ----------------------------------------------------------------------------------


@contextlib.contextmanager
def stamped() -> Iterator[None]:
    say(f"{time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}  {machine()}")
    yield
    say(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("prefix", help="prefix-aware order vs naive interleaved order (SmolLM2)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--tests", type=int, default=40, choices=range(1, len(TEST_COUNTRIES) + 1), metavar="N"
    )
    p.add_argument("--threads", type=int, default=None, help="n_threads (default: every CPU)")
    p.add_argument("--prefix-chunk", type=int, default=None, help="the model's prefix_chunk")
    c = sub.add_parser("cache", help="cold run vs unchanged rerun via the CLI (SmolLM2)")
    c.add_argument("--threads", type=int, default=None, help="n_threads (default: every CPU)")
    c.add_argument("--topics", type=int, default=60, help="tests per template (default 60)")
    c.add_argument("--warm", type=int, default=5, help="unchanged reruns (default 5)")
    s = sub.add_parser("scale", help="10,000 cells on the fake backend: RSS and time per cell")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--tests", type=int, default=100)
    s.add_argument("--prompts", type=int, default=100)
    s.add_argument("--small", action="store_true", help="also run 1/10 of the tests (flatness)")
    st = sub.add_parser("startup", help="promptlab --help and validate: wall time per run")
    st.add_argument("--runs", type=int, default=15)
    ch = sub.add_parser("_scale-child", help=argparse.SUPPRESS)
    ch.add_argument("suite", type=Path)
    ch.add_argument("out", type=Path)
    ch.add_argument("--no-cache", action="store_true")
    ch.add_argument("--cache-db", type=Path, default=None)
    ch.add_argument("--profile", type=int, default=0, help="print the top N functions (cProfile)")
    args = ap.parse_args(argv)
    if args.bench == "_scale-child":
        return scale_child(args)
    bench: dict[str, Callable[[argparse.Namespace], int]] = {
        "prefix": bench_prefix,
        "cache": bench_cache,
        "scale": bench_scale,
        "startup": bench_startup,
    }
    say(f"$ {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    with stamped():
        return bench[args.bench](args)


if __name__ == "__main__":
    sys.exit(main())
