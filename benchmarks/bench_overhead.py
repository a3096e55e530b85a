"""promptlab's overhead against a bare llama-cpp-python loop, on the same prompts, in one process.

A (promptlab): `promptlab.core.run(suite)` in-process, output under a temp dir, no progress bar.
B (bare):      the same final rendered prompts (`core.prepare(suite).cells`: text, add_bos) sent
               through one `llama_cpp.Llama` per model, loaded once with promptlab's exact load
               settings, tokenized and completed with every sampling parameter explicit, exactly
               as `promptlab.backends.llama.LlamaBackend.generate` does.

After one untimed warm-up of each, the two alternate (A B A B ...) for --repeats rounds so that
drift on a noisy machine hits both alike. Model load is excluded from both: promptlab's headline
time is the wall time around `core.run` minus `load_ms` from its manifest (so it still includes
rendering, the run folder, scoring and the reports); its generation-only time is the sum of
`latency_ms` in results.jsonl. The floor is llama.cpp's own engine time (prompt_eval_ms + eval_ms
from results.jsonl). Outputs are compared cell by cell between A and B in every round.

    .venv/bin/python benchmarks/bench_overhead.py --repeats 5 [--suite evals/example.yaml] [--json]

Exit status: 0 when every output matched, 1 on any mismatch, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp.llama_cpp as llama_lib

from promptlab import core
from promptlab.backends import Sampling, is_fake
from promptlab.backends.llama_runtime import (
    build_has_amx,
    supports_gpu_offload,
    without_extra_buffers,
)
from promptlab.engine.store import read_manifest, read_results
from promptlab.errors import PromptlabError
from promptlab.plan import Cell, Plan, PlannedModel

TARGET = 1.05
QUIET = 0.10  # a round is 'quiet' when other processes used under 10% of the CPUs
ROOT = Path(__file__).resolve().parent.parent


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_snapshot() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process); None off Linux."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    v = [int(x) for x in first[1:9]]
    busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / _TICK  # user nice system irq softirq steal
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


def others_share(
    before: tuple[float, float] | None, after: tuple[float, float] | None, wall_ms: float
) -> float | None:
    """Share of all CPUs that other processes (and the hypervisor) used over an interval."""
    if before is None or after is None or wall_ms <= 0:
        return None
    other = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, other / (wall_ms / 1000 * (os.cpu_count() or 1)))


@dataclass
class PromptlabRound:
    wall_ms: float  # wall time around core.run
    load_ms: float  # model load(s), from the manifest
    latency_sum_ms: float  # sum of per-cell latency_ms from results.jsonl (generate calls only)
    engine_ms: float  # sum of prompt_eval_ms + eval_ms from results.jsonl
    outputs: dict[str, str | None]
    others: float | None  # CPU share used by other processes during core.run

    @property
    def e2e_ms(self) -> float:
        """The headline: everything core.run does except loading the model."""
        return self.wall_ms - self.load_ms


@dataclass
class BareRound:
    wall_ms: float  # the cell loop only
    engine_ms: float  # llama.cpp perf counters over the whole loop
    outputs: dict[str, str]
    others: float | None


@dataclass
class Summary:
    suite: str
    cells: int
    repeats: int
    models: list[dict[str, Any]]
    sampling: dict[str, Any]
    promptlab_e2e_ms: list[float] = field(default_factory=list)
    promptlab_latency_sum_ms: list[float] = field(default_factory=list)
    promptlab_load_ms: list[float] = field(default_factory=list)
    promptlab_engine_ms: list[float] = field(default_factory=list)
    bare_ms: list[float] = field(default_factory=list)
    bare_engine_ms: list[float] = field(default_factory=list)
    mismatches: int = 0
    mismatch_examples: list[dict[str, Any]] = field(default_factory=list)
    paired_ratios: list[float] = field(default_factory=list)
    promptlab_others_pct: list[float | None] = field(default_factory=list)
    bare_others_pct: list[float | None] = field(default_factory=list)
    quiet_rounds: list[int] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    minimums: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    target: float = TARGET


def open_bare(model: PlannedModel) -> Any:
    """One Llama with exactly the settings LlamaBackend passes (n_gpu_layers resolved the same way)."""
    s = model.settings
    requested = s.n_gpu_layers
    n_gpu_layers = (-1 if supports_gpu_offload() else 0) if requested is None else requested
    with without_extra_buffers(build_has_amx()):
        return llama_cpp.Llama(
            model_path=str(model.path),
            n_gpu_layers=n_gpu_layers,
            n_ctx=s.n_ctx,
            n_batch=s.n_batch,
            n_ubatch=s.n_batch,
            n_threads=s.n_threads,
            n_threads_batch=s.n_threads_batch,
            seed=s.seed,
            flash_attn=s.flash_attn,  # False unless the suite turns it on
            logits_all=False,
            embedding=False,
            offload_kqv=True,
            use_mmap=True,
            use_mlock=False,
            verbose=False,
        )


def run_bare(
    llms: dict[str, Any], groups: list[tuple[str, list[Cell]]], sampling: Sampling
) -> BareRound:
    outputs: dict[str, str] = {}
    for llm in llms.values():
        llm.reset()  # no prefix carried over from the last round: promptlab starts each run cold
        llama_lib.llama_perf_context_reset(llm.ctx)
    stop = list(sampling.stop)
    cpu0 = cpu_snapshot()
    t0 = time.perf_counter()
    for label, cells in groups:
        llm = llms[label]
        for cell in cells:
            tokens = llm.tokenize(cell.text.encode(), add_bos=cell.add_bos, special=True)
            out = llm.create_completion(
                prompt=tokens,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                min_p=sampling.min_p,
                typical_p=1.0,
                repeat_penalty=sampling.repeat_penalty,
                frequency_penalty=0.0,
                presence_penalty=0.0,
                stop=stop,
                seed=sampling.seed,
                stream=False,
            )
            outputs[cell.id] = out["choices"][0]["text"]
    wall_ms = (time.perf_counter() - t0) * 1000
    others = others_share(cpu0, cpu_snapshot(), wall_ms)
    engine_ms = 0.0
    for llm in llms.values():
        perf = llama_lib.llama_perf_context(llm.ctx)
        engine_ms += float(perf.t_p_eval_ms) + float(perf.t_eval_ms)
    return BareRound(wall_ms, engine_ms, outputs, others)


def run_promptlab(suite: Path, out: Path, limit: int | None) -> PromptlabRound:
    cpu0 = cpu_snapshot()
    t0 = time.perf_counter()
    # No result cache: every round must really generate, like the bare loop.
    result = core.run(
        suite,
        out=out,
        limit=limit,
        progress=None,
        argv=["bench_overhead"],
        cache=core.CacheOptions(use=False),
    )
    wall_ms = (time.perf_counter() - t0) * 1000
    others = others_share(cpu0, cpu_snapshot(), wall_ms)
    if result.status != "complete":
        raise SystemExit(f"promptlab run {result.status}: {result.error}")
    manifest = read_manifest(out)
    rows = read_results(out)
    load_ms = sum(float(m["load_ms"]) for m in manifest["models"])
    return PromptlabRound(
        wall_ms=wall_ms,
        load_ms=load_ms,
        latency_sum_ms=sum(float(r["latency_ms"]) for r in rows),
        engine_ms=sum(float(r["prompt_eval_ms"] or 0) + float(r["eval_ms"] or 0) for r in rows),
        outputs={r["cell_id"]: r["output"] for r in rows},
        others=others,
    )


def pct(share: float | None) -> float | None:
    return None if share is None else round(share * 100, 1)


def _fmt(p: float | None) -> str:
    return "-" if p is None else f"{p:.0f}"


def groups_in_run_order(plan: Plan) -> list[tuple[str, list[Cell]]]:
    """Cells per model, in the order runner.execute runs them."""
    out = []
    for model in plan.models:
        cells = [c for c in plan.cells if c.model is model]
        if cells:
            out.append((model.label, cells))
    return out


def compare(plan: Plan, a: PromptlabRound, b: BareRound, round_no: int, summary: Summary) -> int:
    bad = 0
    for cell in plan.cells:
        pa, pb = a.outputs.get(cell.id), b.outputs.get(cell.id)
        if pa != pb:
            bad += 1
            if len(summary.mismatch_examples) < 5:
                summary.mismatch_examples.append(
                    {"round": round_no, "cell": cell.id, "promptlab": pa, "bare": pb}
                )
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--suite", type=Path, default=ROOT / "evals" / "example.yaml")
    ap.add_argument("--repeats", type=int, default=5, help="timed A/B rounds (default 5)")
    ap.add_argument("--limit", type=int, default=None, help="first N tests only (smoke runs)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    # With --json, stdout carries only the JSON; the human-readable lines go to stderr.
    human = sys.stderr if args.json else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=human, flush=True)

    try:
        plan = core.prepare(args.suite, limit=args.limit)
    except PromptlabError as exc:
        print(f"bench_overhead: {exc.one_line()}", file=sys.stderr)
        return 2
    fakes = [m.label for m in plan.models if isinstance(m.path, str) and is_fake(m.path)]
    if fakes:
        print(f"bench_overhead: fake models {fakes} have no bare llama.cpp twin", file=sys.stderr)
        return 2
    groups = groups_in_run_order(plan)
    sampling = plan.sampling
    summary = Summary(
        suite=str(args.suite),
        cells=len(plan.cells),
        repeats=args.repeats,
        models=[
            {"label": m.label, "path": str(m.path), "settings": m.settings.as_dict()}
            for m in plan.models
        ],
        sampling=asdict(sampling),
    )
    say(f"suite {args.suite}: {len(plan.cells)} cells, models {[m.label for m in plan.models]}")
    say(f"sampling {asdict(sampling)}")
    if sampling.temperature != 0:
        say("note: temperature is not 0, so identical outputs are not guaranteed")

    cols = [
        ("round", 5),
        ("pl e2e-load", 11),
        ("pl lat.sum", 10),
        ("pl load", 7),
        ("bare loop", 9),
        ("floor", 7),
        ("bare eng", 8),
        ("pl out", 6),
        ("bare out", 8),
        ("ratio", 6),
        ("mismatch", 8),
        ("others%", 7),
    ]
    header = "  ".join(f"{name:>{w}}" for name, w in cols)

    def row(
        label: str, values: list[float], ratio: str = "", bad: str = "", others: str = ""
    ) -> str:
        # seconds for the suite-sized columns, milliseconds for the two "outside engine" ones
        secs = [f"{v / 1000:.3f}" for v in values[:6]]
        msecs = [f"{v:.0f}ms" for v in values[6:]]
        cells = [label, *secs, *msecs, ratio, bad, others]
        return "  ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, cols, strict=True))

    llms = {m.label: open_bare(m) for m in plan.models if any(m.label == g for g, _ in groups)}
    try:
        with tempfile.TemporaryDirectory(prefix="promptlab-bench-") as tmp:
            say("warm-up (untimed): one promptlab run, one bare loop")
            run_promptlab(args.suite, Path(tmp) / "warmup", args.limit)
            run_bare(llms, groups, sampling)
            say()
            say(header)
            say("-" * len(header))
            for i in range(1, args.repeats + 1):
                a = run_promptlab(args.suite, Path(tmp) / f"round{i}", args.limit)
                b = run_bare(llms, groups, sampling)
                bad = compare(plan, a, b, i, summary)
                summary.mismatches += bad
                summary.promptlab_e2e_ms.append(round(a.e2e_ms, 1))
                summary.promptlab_latency_sum_ms.append(round(a.latency_sum_ms, 1))
                summary.promptlab_load_ms.append(round(a.load_ms, 1))
                summary.promptlab_engine_ms.append(round(a.engine_ms, 1))
                summary.bare_ms.append(round(b.wall_ms, 1))
                summary.bare_engine_ms.append(round(b.engine_ms, 1))
                summary.paired_ratios.append(round(a.e2e_ms / b.wall_ms, 4))
                vals = [
                    a.e2e_ms,
                    a.latency_sum_ms,
                    a.load_ms,
                    b.wall_ms,
                    a.engine_ms,
                    b.engine_ms,
                    a.e2e_ms - a.engine_ms,
                    b.wall_ms - b.engine_ms,
                ]
                pa, pb = pct(a.others), pct(b.others)
                summary.promptlab_others_pct.append(pa)
                summary.bare_others_pct.append(pb)
                if pa is not None and pb is not None and max(pa, pb) < QUIET * 100:
                    summary.quiet_rounds.append(i)
                shown = f"{_fmt(pa)}/{_fmt(pb)}"
                say(row(str(i), vals, f"{a.e2e_ms / b.wall_ms:.3f}", str(bad), shown))
    finally:
        for llm in llms.values():
            llm.close()

    series = {
        "promptlab_e2e_ms": summary.promptlab_e2e_ms,
        "promptlab_latency_sum_ms": summary.promptlab_latency_sum_ms,
        "promptlab_load_ms": summary.promptlab_load_ms,
        "bare_ms": summary.bare_ms,
        "promptlab_engine_ms": summary.promptlab_engine_ms,
        "bare_engine_ms": summary.bare_engine_ms,
        "promptlab_outside_engine_ms": [
            x - e
            for x, e in zip(summary.promptlab_e2e_ms, summary.promptlab_engine_ms, strict=True)
        ],
        "bare_outside_engine_ms": [
            x - e for x, e in zip(summary.bare_ms, summary.bare_engine_ms, strict=True)
        ],
    }
    med = {k: statistics.median(v) for k, v in series.items()}
    low = {k: min(v) for k, v in series.items()}
    summary.medians = {k: round(v, 1) for k, v in med.items()}
    summary.minimums = {k: round(v, 1) for k, v in low.items()}
    floor = med["promptlab_engine_ms"]
    summary.ratios = {
        "promptlab_e2e_over_bare": round(med["promptlab_e2e_ms"] / med["bare_ms"], 4),
        "promptlab_latency_sum_over_bare": round(
            med["promptlab_latency_sum_ms"] / med["bare_ms"], 4
        ),
        "median_of_paired_ratios": round(statistics.median(summary.paired_ratios), 4),
        "min_promptlab_e2e_over_min_bare": round(low["promptlab_e2e_ms"] / low["bare_ms"], 4),
        "engine_normalized": round(
            (floor + med["promptlab_outside_engine_ms"]) / (floor + med["bare_outside_engine_ms"]),
            4,
        ),
        "bare_over_engine_floor": round(med["bare_ms"] / floor, 4),
        "bare_over_own_engine": round(med["bare_ms"] / med["bare_engine_ms"], 4),
    }
    r = summary.ratios
    say("-" * len(header))
    say(row("median", list(med.values())))
    say(row("min", list(low.values())))
    say()
    say(
        "columns: pl = promptlab; e2e-load = wall around core.run minus model load; lat.sum = sum of "
        "latency_ms; floor = llama.cpp prompt_eval_ms + eval_ms from results.jsonl; bare eng = the "
        "bare loop's own perf counters; out = wall minus engine time; others% = share of the "
        "CPUs other processes used during each half (promptlab/bare), from /proc/stat"
    )
    say()
    verdict = "meets" if r["promptlab_e2e_over_bare"] <= TARGET else "ABOVE"
    say(
        f"HEADLINE ratio median(promptlab e2e - load) / median(bare) = "
        f"{r['promptlab_e2e_over_bare']:.3f}  ({verdict} target <= {TARGET})"
    )
    say(
        f"ratio median(promptlab latency sum) / median(bare)        = "
        f"{r['promptlab_latency_sum_over_bare']:.3f}"
    )
    say(
        f"median of per-round ratios {r['median_of_paired_ratios']:.3f}; "
        f"ratio of minimums {r['min_promptlab_e2e_over_min_bare']:.3f}"
    )
    say(
        f"outside llama.cpp per run: promptlab {med['promptlab_outside_engine_ms']:.0f} ms, "
        f"bare {med['bare_outside_engine_ms']:.0f} ms; on the median floor "
        f"{floor / 1000:.3f}s that is a ratio of {r['engine_normalized']:.3f}"
    )
    say(
        f"engine floor (results.jsonl) median {floor / 1000:.3f}s; median(bare) / floor = "
        f"{r['bare_over_engine_floor']:.3f} (bare / its own perf counters: "
        f"{r['bare_over_own_engine']:.3f})"
    )
    if summary.quiet_rounds:
        q = [summary.paired_ratios[i - 1] for i in summary.quiet_rounds]
        r["median_ratio_quiet_rounds"] = round(statistics.median(q), 4)
        say(
            f"quiet rounds (other processes < {QUIET:.0%} of the CPUs in both halves): "
            f"{summary.quiet_rounds}; median of their ratios {r['median_ratio_quiet_rounds']:.3f}"
        )
    else:
        say(f"no quiet round (other processes used >= {QUIET:.0%} of the CPUs in every round)")
    say(
        f"output mismatches promptlab vs bare: {summary.mismatches} "
        f"of {summary.cells * summary.repeats} cell runs"
    )
    for ex in summary.mismatch_examples:
        say(f"  round {ex['round']} cell {ex['cell']}: {ex['promptlab']!r} != {ex['bare']!r}")
    if args.json:
        print(json.dumps(asdict(summary), indent=2))
    return 1 if summary.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
