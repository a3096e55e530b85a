"""results.csv as a spreadsheet or pandas reads it: one column per name, each with its value."""

from __future__ import annotations

import csv
from collections.abc import Callable

import pandas as pd
from conftest import CliResult, Project

from promptlab.reports.tables import PARAM_COLUMNS

Cli = Callable[..., CliResult]

# Two repeats, so each row's seed (seed + repeat) differs from the suite's seed parameter.
SUITE = """
prompts:
  - raw: "Say {{ word }}"
    label: p
models:
  - path: fake://echo
    label: echo
params:
  seed: 7
repeat: 2
tests:
  - vars: {word: hello}
    assert: [{type: icontains, value: hello}]
"""


def test_results_csv_names_each_column_once(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    r = cli("run", project.write("evals/s.yaml", SUITE), "-o", out)
    assert r.code == 0, r.err
    with (out / "results.csv").open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert len(header) == len(set(header)), sorted(h for h in header if header.count(h) > 1)
    assert header.index("seed") < header.index("var_word")  # the row's own, with its identity
    assert header[-len(PARAM_COLUMNS) :] == list(PARAM_COLUMNS.values())
    frame = pd.read_csv(out / "results.csv")
    assert "seed.1" not in frame.columns
    # Each row's seed is the one it ran with; the parameter column says the same per row.
    assert frame.sort_values("repeat")[["repeat", "seed", "param_seed"]].values.tolist() == [
        [0, 7, 7],
        [1, 8, 8],
    ]
