"""Null check of `promptlab optimize` on the real model: with the labels shuffled, no prompt can
be better, so it must report no significant winner (issue 14's "it does not invent
improvements", on the bundled SmolLM2; the fast fake-backend version is in
tests/optimize/test_optimize_resume.py).

    .venv/bin/python benchmarks/optimize_null.py --seeds 1 2 3
    .venv/bin/python benchmarks/optimize_null.py --seeds 1 --budget 150     # quicker

Each seed builds a throwaway project from evals/optimize_demo.yaml's texts with the topic labels
permuted at random (seeded), so a label says nothing about its text. The original prompt
already shows three demos (it answers in the label format, as every candidate does); optimize
searches other demo sets from the train split and instruction variants. Any deterministic
prompt then passes each test with probability 1/3 whatever it says, so every "improvement" on
validation is luck, and the held-out verdict must say so. Prints one line per seed and a JSON
summary; exit 1 if any seed declared a winner.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from promptlab import core
from promptlab.optimize import optimize

ROOT = Path(__file__).resolve().parent.parent

BASELINE_DEMOS = [
    {"text": "The crowd sang as the final whistle blew.", "topic": "weather"},
    {"text": "Stir the rice until it soaks up the broth.", "topic": "sport"},
    {"text": "A light breeze will keep the evening cool.", "topic": "food"},
]


def build(project: Path, seed: int) -> Path:
    rows = list(csv.DictReader(io.StringIO((ROOT / "evals" / "topics.csv").read_text())))
    labels = [r["topic"] for r in rows]
    random.Random(f"null-labels:{seed}").shuffle(labels)
    (project / "evals").mkdir(parents=True)
    (project / "prompts").mkdir()
    (project / ".git").mkdir()
    shutil.copy(ROOT / "prompts" / "topic.j2", project / "prompts" / "topic.j2")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "topic"])
    writer.writeheader()
    for row, label in zip(rows, labels, strict=True):
        writer.writerow({"text": row["text"], "topic": label})
    (project / "evals" / "topics.csv").write_text(out.getvalue())
    suite = yaml.safe_load((ROOT / "evals" / "optimize_demo.yaml").read_text())
    suite["vars"]["demos"] = BASELINE_DEMOS
    suite["optimize"]["demos"]["k"] = [3]
    path = project / "evals" / "null.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--budget", type=int, default=None)
    args = ap.parse_args()
    found = []
    with tempfile.TemporaryDirectory(prefix="optimize-null-") as tmp:
        for seed in args.seeds:
            project = Path(tmp) / f"seed{seed}"
            suite = build(project, seed)
            result = optimize(
                suite,
                out=project / "run",
                seed=seed,
                budget=args.budget,
                cache=core.CacheOptions(path=project / "cache.sqlite"),
            )
            assert result.verdict is not None and result.search is not None, result.error
            line = {
                "seed": seed,
                "winner": result.verdict.better,
                "verdict": result.verdict.text,
                "baseline_validation": round(result.search.baseline.pass_rate, 3),
                "candidates": result.search.tried,
                "calls": result.used,
            }
            found.append(line)
            print(f"seed {seed}: {result.verdict.text}", flush=True)
    winners = sum(1 for f in found if f["winner"])
    print(json.dumps({"seeds": found, "winners": winners}, indent=2))
    return 1 if winners else 0


if __name__ == "__main__":
    sys.exit(main())
