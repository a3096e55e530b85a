"""The throughput engine's benchmarks (issue 11), each timed as whole processes, interleaved.

    .venv/bin/python benchmarks/bench_fewshot.py fewshot [--rounds 3] [--tests 40]
    .venv/bin/python benchmarks/bench_fewshot.py cached  [--runs 5]
    .venv/bin/python benchmarks/bench_fewshot.py longgen [--rounds 3] [--cells 16 --tokens 128]

fewshot  The workload prompt engineers run most: a 16-shot sentiment block of about 480 tokens
         shared by every test, 2 prompts (two instructions over the same shots) x --tests tests
         = 80 cells, max_tokens 3, greedy, the bundled SmolLM2 with chat: false, n_threads 2,
         n_ctx 2048. Three whole processes per round, in rotating order:
           bare  benchmarks/bare_loop.py: llama-cpp-python's create_completion over the same
                 rendered prompts sorted by text (its own prefix reuse), model load included;
           p1    `promptlab run --no-cache` with parallel: 1 (one sequence);
           pN    the same with parallel: auto (batched decoding).
         Prints medians and the median of the per-round ratios p1/bare and pN/bare (targets
         <= 1.0 and <= 0.75), the prompt tokens each side evaluated, the pass counts, and
         whether p1 and pN gave byte-identical outputs for every cell (they must).
cached   The same suite through `promptlab run` with the result cache: one cold run, then
         --runs unchanged reruns (each a new run folder, every cell from the cache). Targets: a
         rerun under 1.5 s and at least 10x faster than the cold run.
longgen  --cells prompts x --tokens greedy tokens (no stop), parallel 1 against parallel auto,
         --no-cache. Aggregate generation = completion tokens / the generation phase's wall time
         (the manifest's models[].generation), and the whole process. Target: batched >= 1.5x.

`others` is the share of all CPUs that other processes used meanwhile (/proc/stat): check it
before trusting a figure. Runs in a temporary project outside this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROMPTLAB = str(BIN / "promptlab") if (BIN / "promptlab").exists() else "promptlab"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

POSITIVE = [
    "I loved every minute of it and would gladly buy it again",
    "Works perfectly, arrived early and the quality is outstanding",
    "Absolutely wonderful, the whole family enjoys it every day",
    "Great value for the price and the support team was helpful",
    "Beautifully made, sturdy and exactly as described",
    "The best purchase I have made this year, highly recommended",
    "Fast, quiet and reliable, it exceeded my expectations",
    "Lovely design and it was very easy to set up",
]
NEGATIVE = [
    "It broke after two days and the seller never answered",
    "A complete waste of money, nothing works as advertised",
    "The battery dies within an hour and it gets very hot",
    "Cheap plastic, poorly made and the paint peeled off",
    "Terrible customer service and the refund took months",
    "It arrived damaged and smelled strongly of chemicals",
    "Loud, slow and it stopped working after one week",
    "Very disappointing, the instructions were useless",
]
SUBJECTS = [
    "blender",
    "lamp",
    "backpack",
    "kettle",
    "headset",
    "chair",
    "printer",
    "jacket",
    "drill",
    "tent",
]


def shots() -> str:
    lines = []
    for i in range(8):
        lines.append(f"Review: The {SUBJECTS[i]} is fine. {POSITIVE[i]}.\nSentiment: positive\n")
        lines.append(
            f"Review: The {SUBJECTS[i + 1]} is here. {NEGATIVE[i]}.\nSentiment: negative\n"
        )
    return "\n".join(lines)


def tests(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        good = i % 2 == 0
        pool = POSITIVE if good else NEGATIVE
        text = f"My new {SUBJECTS[i % len(SUBJECTS)]}: {pool[(i * 3) % len(pool)].lower()}, {pool[(i * 5 + 1) % len(pool)].lower()}"
        label = "positive" if good else "negative"
        out.append({"description": f"review {i + 1}", "vars": {"review": text, "label": label}})
    return out


def fewshot_project(n_tests: int, model: str = "smollm2") -> Path:
    project = Path(tempfile.mkdtemp(prefix="pl-fewshot-"))
    (project / "promptlab.toml").write_text("")
    block = shots()
    (project / "prompts").mkdir()
    (project / "prompts" / "classify.j2").write_text(
        "Classify the sentiment of each product review as positive or negative.\n\n"
        + block
        + "\nReview: {{ review }}\nSentiment:"
    )
    (project / "prompts" / "label.j2").write_text(
        "Label each review with one word, positive or negative, after 'Sentiment:'.\n\n"
        + block
        + "\nReview: {{ review }}\nSentiment:"
    )
    for name, parallel in (("p1", "1"), ("pN", "auto")):
        suite = {
            "description": "few-shot sentiment",
            "prompts": [
                {"id": "file://prompts/classify.j2", "label": "classify"},
                {"id": "file://prompts/label.j2", "label": "label"},
            ],
            "models": [
                {
                    "path": model,
                    "chat": False,
                    "n_threads": 2,
                    "n_ctx": 2048,
                    "parallel": parallel if parallel == "auto" else int(parallel),
                }
            ],
            "params": {"temperature": 0, "max_tokens": 3},
            "defaultTest": {"assert": [{"type": "icontains", "value": "{{ label }}"}]},
            "tests": tests(n_tests),
        }
        (project / f"fewshot-{name}.json").write_text(json.dumps(suite, indent=1))
    return project


def longgen_project(n_cells: int, n_tokens: int) -> Path:
    project = Path(tempfile.mkdtemp(prefix="pl-longgen-"))
    (project / "promptlab.toml").write_text("")
    topics = [
        "a lighthouse keeper",
        "a river in spring",
        "an old clockmaker",
        "a mountain village",
        "a desert caravan",
        "a city at night",
        "a winter harbour",
        "a forest fire",
        "a train journey",
        "a market morning",
        "a lost letter",
        "a summer storm",
        "a school play",
        "a broken bridge",
        "a new neighbour",
        "a quiet library",
    ]
    for name, parallel in (("p1", 1), ("pN", "auto")):
        suite = {
            "prompts": ["Write a short story about {{ topic }}.\n\nStory:"],
            "models": [
                {
                    "path": "smollm2",
                    "chat": False,
                    "n_threads": 2,
                    "n_ctx": 1024,
                    "parallel": parallel,
                }
            ],
            "params": {"temperature": 0, "max_tokens": n_tokens},
            "tests": [
                {
                    "vars": {
                        "topic": topics[i % len(topics)] + ("" if i < len(topics) else f" ({i})")
                    }
                }
                for i in range(n_cells)
            ],
        }
        (project / f"longgen-{name}.json").write_text(json.dumps(suite, indent=1))
    return project


# --- measuring -----------------------------------------------------------------------------


def _cpu() -> tuple[float, float]:
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


@dataclass
class Timed:
    wall: float
    code: int
    others: float | None


def timed(argv: list[str], cwd: Path) -> Timed:
    """Run a whole process; wall time, exit code, and the CPU share other processes took.
    A `-o DIR` it names is removed first (untimed)."""
    if "-o" in argv:
        shutil.rmtree(cwd / argv[argv.index("-o") + 1], ignore_errors=True)
    before = _cpu()
    t0 = time.perf_counter()
    own0 = os.times()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    own1 = os.times()
    after = _cpu()
    busy = (after[0] - before[0]) / _TICK
    mine = (own1.children_user + own1.children_system) - (own0.children_user + own0.children_system)
    ncpu = os.cpu_count() or 1
    others = max(0.0, (busy - mine) / (wall * ncpu)) if wall > 0 else None
    if proc.returncode not in (0, 100):
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{argv[0]} failed with {proc.returncode}")
    return Timed(wall, proc.returncode, others)


def med(values: list[float]) -> float:
    return statistics.median(values)


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line
    ]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def model_path(alias: str) -> str:
    from promptlab.models import BUNDLED  # noqa: PLC0415 - only where a model is needed

    path = BUNDLED[alias].locate()
    if path is None:
        raise SystemExit(f"{alias} is not installed (./dev setup)")
    return str(path)


# --- fewshot -------------------------------------------------------------------------------


def precompile() -> None:
    """Bytecode for promptlab, as an installed package has: with PYTHONDONTWRITEBYTECODE=1 an
    editable checkout would compile itself again in every timed process (./dev setup does this)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "promptlab")], check=False)


def bench_fewshot(args: argparse.Namespace) -> int:
    precompile()
    project = fewshot_project(args.tests, args.model)
    render = subprocess.run(
        [PROMPTLAB, "render", "fewshot-p1.json", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    cells = json.loads(render.stdout)
    bare_in = project / "cells.json"
    bare_in.write_text(
        json.dumps(
            [
                {
                    "text": c["text"],
                    "expected": c["vars"]["label"],
                    "max_tokens": 3,
                    "stop": [],
                    "model": model_path(args.model),
                    "n_ctx": 2048,
                    "n_threads": 2,
                }
                for c in cells
            ]
        )
    )
    print(f"machine: {machine()}")
    print(
        f"suite: {len(cells)} cells of {min(len(c['text']) for c in cells)}-{max(len(c['text']) for c in cells)} characters"
    )
    commands = {
        "bare": [
            sys.executable,
            str(ROOT / "benchmarks" / "bare_loop.py"),
            str(bare_in),
            str(project / "bare-out.json"),
        ],
        "p1": [PROMPTLAB, "run", "fewshot-p1.json", "--no-cache", "-o", "out-p1"],
        "pN": [PROMPTLAB, "run", "fewshot-pN.json", "--no-cache", "-o", "out-pN"],
    }
    names = list(commands)
    walls: dict[str, list[float]] = {n: [] for n in names}
    others: list[float] = []
    ratios: dict[str, list[float]] = {"p1": [], "pN": []}
    for _ in range(1):  # warm-up: the OS page cache, and the exactness verdict
        for n in names:
            timed(commands[n], project)
    for r in range(args.rounds):
        order = names[r % 3 :] + names[: r % 3]
        got: dict[str, float] = {}
        for n in order:
            t = timed(commands[n], project)
            got[n] = t.wall
            walls[n].append(t.wall)
            if t.others is not None:
                others.append(t.others)
        for n in ("p1", "pN"):
            ratios[n].append(got[n] / got["bare"])
        print(f"round {r + 1}: " + ", ".join(f"{n} {got[n]:.2f} s" for n in names))
    bare_out = json.loads((project / "bare-out.json").read_text())
    p1, pN = rows_of(project / "out-p1"), rows_of(project / "out-pN")
    same = {r["cell_id"]: r["output"] for r in p1} == {r["cell_id"]: r["output"] for r in pN}
    manifest = json.loads((project / "out-p1" / "manifest.json").read_text())
    reuse = manifest.get("prefix_reuse", {})
    gen = {
        m["label"]: m.get("generation")
        for m in json.loads((project / "out-pN" / "manifest.json").read_text())["models"]
    }
    print()
    print(
        f"median wall: bare {med(walls['bare']):.2f} s, p1 {med(walls['p1']):.2f} s, pN {med(walls['pN']):.2f} s"
    )
    print(
        f"median ratio p1/bare {med(ratios['p1']):.3f} (target <= 1.0), pN/bare {med(ratios['pN']):.3f} (target <= 0.75)"
    )
    print(f"others: median {med(others):.0%} of the CPUs" if others else "others: unknown")
    print(
        f"promptlab prompt tokens (p1): {reuse.get('evaluated')} evaluated, {reuse.get('reused')} reused of {reuse.get('prompt_tokens')}"
    )
    print(f"pN generation phase: {gen}")
    # Where each side's engine time went (the last round's rows): prompt fills vs generation steps.
    for name, rows in (("p1", p1), ("pN", pN)):
        fill = sum(float(r.get("prompt_eval_ms") or 0) for r in rows) / 1000
        steps = sum(float(r.get("eval_ms") or 0) for r in rows) / 1000
        tokens = sum(int(r.get("prompt_eval_tokens") or 0) for r in rows)
        print(
            f"{name} engine time: prompt fills {fill:.2f} s for {tokens} tokens "
            f"({fill * 1000 / max(1, tokens):.2f} ms/token), generation steps {steps:.2f} s"
        )
    print(
        f"passed: bare {sum(c['pass'] for c in bare_out)}/{len(bare_out)}, p1 {sum(r['status'] == 'pass' for r in p1)}/{len(p1)}, pN {sum(r['status'] == 'pass' for r in pN)}/{len(pN)}"
    )
    print(f"p1 and pN outputs byte-identical for every cell: {same}")
    return 0 if same else 1


# --- cached --------------------------------------------------------------------------------


def bench_cached(args: argparse.Namespace) -> int:
    precompile()
    project = fewshot_project(40)
    print(f"machine: {machine()}")
    cold = timed([PROMPTLAB, "run", "fewshot-p1.json", "-o", "cold"], project)
    warm: list[float] = []
    for i in range(args.runs):
        t = timed([PROMPTLAB, "run", "fewshot-p1.json", "-o", f"warm{i}"], project)
        warm.append(t.wall)
    rows = rows_of(project / f"warm{args.runs - 1}")
    print(
        f"cold run {cold.wall:.2f} s; cached reruns: median {med(warm):.2f} s (min {min(warm):.2f}, max {max(warm):.2f})"
    )
    print(
        f"cold / cached = {cold.wall / med(warm):.1f}x (target >= 10x); cached rerun target < 1.5 s"
    )
    print(
        f"cells from the cache in the last rerun: {sum(bool(r.get('cached')) for r in rows)}/{len(rows)}"
    )
    return 0


# --- longgen -------------------------------------------------------------------------------


def bench_longgen(args: argparse.Namespace) -> int:
    precompile()
    project = longgen_project(args.cells, args.tokens)
    print(f"machine: {machine()}")
    walls: dict[str, list[float]] = {"p1": [], "pN": []}
    agg: dict[str, list[float]] = {"p1": [], "pN": []}
    for r in range(args.rounds):
        for n in ("p1", "pN") if r % 2 == 0 else ("pN", "p1"):
            t = timed(
                [PROMPTLAB, "run", f"longgen-{n}.json", "--no-cache", "-o", f"out-{n}"], project
            )
            walls[n].append(t.wall)
            models = json.loads((project / f"out-{n}" / "manifest.json").read_text())["models"]
            gen = models[0]["generation"]
            agg[n].append(gen["completion_tokens"] / gen["wall_ms"] * 1000)
            print(
                f"round {r + 1} {n}: {t.wall:.2f} s whole process, {agg[n][-1]:.1f} tok/s generation phase, parallel {models[0]['runtime']['parallel']}"
            )
    p1, pN = rows_of(project / "out-p1"), rows_of(project / "out-pN")
    same = {r["cell_id"]: r["output"] for r in p1} == {r["cell_id"]: r["output"] for r in pN}
    print()
    print(
        f"aggregate generation: p1 {med(agg['p1']):.1f} tok/s, pN {med(agg['pN']):.1f} tok/s: {med(agg['pN']) / med(agg['p1']):.2f}x (target >= 1.5x)"
    )
    print(
        f"whole process: p1 {med(walls['p1']):.2f} s, pN {med(walls['pN']):.2f} s: {med(walls['p1']) / med(walls['pN']):.2f}x"
    )
    print(f"outputs byte-identical: {same}")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fewshot")
    f.add_argument("--rounds", type=int, default=3)
    f.add_argument("--tests", type=int, default=40)
    f.add_argument("--model", default="smollm2", help="bundled alias: smollm2 or gemma3")
    c = sub.add_parser("cached")
    c.add_argument("--runs", type=int, default=5)
    g = sub.add_parser("longgen")
    g.add_argument("--rounds", type=int, default=3)
    g.add_argument("--cells", type=int, default=16)
    g.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args(argv)
    return {"fewshot": bench_fewshot, "cached": bench_cached, "longgen": bench_longgen}[args.what](
        args
    )


if __name__ == "__main__":
    sys.exit(main())
