"""In-process llama.cpp against the OpenAI-compatible server backend, on the same suite (issue 15).

    .venv/bin/python benchmarks/bench_server.py                       # 5 rounds, 20 tests
    .venv/bin/python benchmarks/bench_server.py --rounds 1 --tests 2 --max-tokens 4   # smoke run
    .venv/bin/python benchmarks/bench_server.py --threads 2 --concurrency 4 --json

One suite of plain prompts (greedy, raw completion, `stop: ["\\n"]`) on the bundled SmolLM2, run
two ways as whole `promptlab run --no-cache` processes:
  A  in-process: `{path: smollm2, chat: false, n_threads: T}` (promptlab's own engine, batched)
  B  server: `{provider: openai, ...}` against `python -m llama_cpp.server` on the same GGUF with
     `--n_threads T`, started once before the rounds and left running (as a user's server is);
     requests go out `--concurrency` at a time (llama-cpp-python's server runs one at a time).
Rounds alternate A B, B A, ... so drift on the machine hits both alike; medians are printed, of
the whole process's wall time and of the wall time minus the model load (A's `load_ms`; B's is
the GET /models handshake). Each round checks that both sides produced the same outputs; the exit
status is 1 on any mismatch. `others` is the share of all CPUs other processes used meanwhile
(/proc/stat minus the run and the server): check it before trusting a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COUNTRIES = [
    "France", "Japan", "Italy", "Spain", "Germany", "Canada", "Brazil", "Egypt", "India", "Peru",
    "Kenya", "Chile", "Norway", "Poland", "Greece", "Cuba", "Iran", "Mexico", "Turkey", "Nepal",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with Path("/proc/stat").open() as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def write_suite(folder: Path, name: str, model: str, tests: int, max_tokens: int) -> Path:
    countries = (COUNTRIES * (tests // len(COUNTRIES) + 1))[:tests]
    lines = [
        'prompts: ["Q: What is the capital of {{ country }}?\\nA:"]',
        f"models: [{model}]",
        f'params: {{temperature: 0, max_tokens: {max_tokens}, stop: ["\\n"]}}',
        "tests:",
        *(f"  - vars: {{country: {c}, n: {i}}}" for i, c in enumerate(countries)),
    ]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (the server: not a child of the run)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(suite: Path, out: Path, server_pid: int) -> dict[str, Any]:
    busy0, total0 = cpu_times()
    self0 = os.times()
    server0 = proc_cpu_s(server_pid)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "promptlab", "run", str(suite), "-o", str(out), "--no-cache"],
        capture_output=True,
        text=True,
        check=False,
        # This checkout's promptlab, whatever the venv has installed.
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    wall = time.perf_counter() - start
    self1 = os.times()
    server1 = proc_cpu_s(server_pid)
    busy1, total1 = cpu_times()
    if done.returncode not in (0, 100):
        raise SystemExit(f"{suite.name}: promptlab exited {done.returncode}: {done.stderr[-800:]}")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    load_ms = sum(float(m.get("load_ms") or 0.0) for m in manifest.get("models", []))
    tick = os.sysconf("SC_CLK_TCK")
    mine = (self1.children_user + self1.children_system) - (
        self0.children_user + self0.children_system
    )
    mine += server1 - server0  # the server's work is this benchmark's, not another process's
    others = ((busy1 - busy0) / tick - mine) / max((total1 - total0) / tick, 1e-9)
    return {
        "wall_s": wall,
        "wall_minus_load_s": wall - load_ms / 1000,
        "others": max(0.0, others),
        "outputs": {r["cell_id"]: r["output"] for r in rows},
        "names": {r["cell_id"]: r["test"] for r in rows},
    }


def start_server(model: Path, port: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited: {log.read_text()[-800:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("llama_cpp.server did not answer within 180 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from promptlab.models import BUNDLED  # noqa: PLC0415 - after the path is set

    gguf = BUNDLED["smollm2"].locate()
    if gguf is None:
        raise SystemExit("the bundled smollm2 is not installed (./dev setup)")
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        folder = Path(tmp)
        (folder / ".git").mkdir()  # a project root, so the suite's paths stay inside it
        port = free_port()
        server = start_server(gguf, port, args.threads, folder / "server.log")
        try:
            url = f"http://127.0.0.1:{port}/v1"
            suites = {
                "in-process": write_suite(
                    folder,
                    "local",
                    f"{{path: smollm2, chat: false, n_threads: {args.threads}, n_ctx: 2048}}",
                    args.tests,
                    args.max_tokens,
                ),
                "server": write_suite(
                    folder,
                    "server",
                    f"{{provider: openai, base_url: {url}, model: smollm2, "
                    f"concurrency: {args.concurrency}}}",
                    args.tests,
                    args.max_tokens,
                ),
            }
            results: dict[str, list[dict[str, Any]]] = {k: [] for k in suites}
            mismatches = 0
            for r in range(args.rounds):
                order = list(suites) if r % 2 == 0 else list(reversed(suites))
                for name in order:
                    res = run_once(suites[name], folder / f"{name}-{r}", server.pid)
                    results[name].append(res)
                    print(
                        f"round {r + 1} {name:10s} wall {res['wall_s']:6.2f} s  minus load "
                        f"{res['wall_minus_load_s']:6.2f} s  others {res['others']:.0%}",
                        file=sys.stderr,
                    )
                a, b = results["in-process"][-1], results["server"][-1]
                by_name_a = {a["names"][k]: v for k, v in a["outputs"].items()}
                by_name_b = {b["names"][k]: v for k, v in b["outputs"].items()}
                differ = [k for k in by_name_a if by_name_a[k] != by_name_b.get(k)]
                mismatches += len(differ)
                if differ:
                    print(f"round {r + 1}: outputs differ on {differ[:5]}", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=30)
    summary: dict[str, Any] = {
        "tests": args.tests,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "mismatches": mismatches,
    }
    for name, runs in results.items():
        summary[name] = {
            "median_wall_s": round(statistics.median(x["wall_s"] for x in runs), 3),
            "median_wall_minus_load_s": round(
                statistics.median(x["wall_minus_load_s"] for x in runs), 3
            ),
            "median_others": round(statistics.median(x["others"] for x in runs), 3),
        }
    ratio = summary["server"]["median_wall_s"] / summary["in-process"]["median_wall_s"]
    ratio_run = (
        summary["server"]["median_wall_minus_load_s"]
        / summary["in-process"]["median_wall_minus_load_s"]
    )
    summary["server_over_in_process"] = round(ratio, 3)
    summary["server_over_in_process_minus_load"] = round(ratio_run, 3)
    print(
        f"server / in-process: {ratio:.2f}x whole process, {ratio_run:.2f}x without the model "
        f"load; {mismatches} output mismatches",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
