"""Prompt and generation speed by thread count and OpenMP wait policy, on one bundled model.

Why: llama-cpp-python defaults n_threads to cpu_count()//2 and promptlab defaults to every usable
CPU; on small shared machines the best setting has measured both ways, and OpenMP's spin-waiting
interacts with other load. Each configuration runs in its own process (OMP_WAIT_POLICY is read at
library load), configurations interleave round by round, and the medians are printed.

    .venv/bin/python benchmarks/bench_threads.py --rounds 3
    .venv/bin/python benchmarks/bench_threads.py --rounds 3 --busy 1   # with one CPU hog running
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, sys
from promptlab.backends import LoadSettings, Sampling, open_backend
from promptlab.models import BUNDLED
threads, tokens = int(sys.argv[1]), int(sys.argv[2])
backend = open_backend(BUNDLED[sys.argv[3]].locate(), LoadSettings(None, 2048, 512, threads, threads, False, 0))
sampling = Sampling(0.0, 0.95, 40, 0.05, tokens, (), 0, 1.0)
text = "Write a short story about a robot who learns to paint. " * 8
backend.generate(text, True, sampling)  # warm-up
pp_n = pp_ms = tg_n = tg_ms = 0.0
for i in range(3):
    g = backend.generate(f"{i} {text}", True, sampling)  # a new first token: no prefix reuse
    pp_n += g.prompt_eval_tokens or 0
    pp_ms += g.prompt_eval_ms or 0
    tg_n += g.completion_tokens
    tg_ms += g.eval_ms or 0
print(json.dumps({"pp": pp_n / pp_ms * 1000, "tg": tg_n / tg_ms * 1000}))
"""


def measure(threads: int, policy: str | None, tokens: int, model: str) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(tokens), model],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per call")
    ap.add_argument("--model", default="smollm2", help="bundled alias")
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="comma-separated")
    ap.add_argument("--busy", type=int, default=0, help="CPU-hog processes to run meanwhile")
    ap.add_argument("--policies", default="default,PASSIVE", help="OMP_WAIT_POLICY values")
    args = ap.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        return report(args)
    finally:
        for hog in hogs:
            hog.kill()


def report(args: argparse.Namespace) -> int:
    policies = [None if p == "default" else p for p in args.policies.split(",")]
    configs = [(int(t), p) for t in args.threads.split(",") for p in policies]
    samples: dict[tuple[int, str | None], list[dict[str, float]]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for threads, policy in configs:
            samples[(threads, policy)].append(measure(threads, policy, args.tokens, args.model))
    print(f"{args.model}, {args.rounds} rounds, {args.busy} CPU hog(s), medians (tokens/s)")
    print(f"{'threads':>7}  {'OMP_WAIT_POLICY':<15} {'prompt':>8} {'generate':>9}")
    for (threads, policy), runs in samples.items():
        pp = statistics.median(r["pp"] for r in runs)
        tg = statistics.median(r["tg"] for r in runs)
        print(f"{threads:>7}  {policy or 'default':<15} {pp:>8.1f} {tg:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
