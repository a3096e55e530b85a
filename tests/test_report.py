"""report.html: escaped, self-contained, a prompt × test grid, failed checks and a manifest footer."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from conftest import CliResult, Project

Cli = Callable[..., CliResult]

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


class Tables(HTMLParser):
    """Collect every <table> as rows of cell texts, plus the class of each table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append((dict(attrs).get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []
        elif self._cell is not None:
            self._cell.append(" ")  # inner elements (div, pre, li) read as separate words

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str, cls: str = "") -> list[list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return [rows for c, rows in parser.tables if not cls or c == cls]


def run(project: Project, cli: Cli, suite: str, *extra: str, code: int = 100) -> tuple[Path, str]:
    path = project.write("evals/suite.yaml", suite)
    out = project.root / "out"
    r = cli("run", path, "-o", out, *extra)
    assert r.code == code, r.err
    return out, (out / "report.html").read_text(encoding="utf-8")


GRID_SUITE = """
description: grid
prompts:
  - raw: "Name {{ thing }}"
    label: p_name
  - raw: "Describe {{ thing }} briefly"
    label: p_describe
  - raw: "Spell {{ thing }}"
    label: p_spell
models:
  - path: fake://echo
    label: echo
    n_ctx: 64
params:
  max_tokens: 16
tests:
  - description: t_apple
    vars: {thing: apple}
    assert:
      - type: icontains
        value: apple
  - description: t_pear
    vars: {thing: pear}
    assert:
      - type: contains
        value: banana
  - description: t_plum
    vars: {thing: plum}
"""


def test_vars_and_outputs_are_escaped(project: Project, cli: Cli) -> None:
    suite = f"""
    description: "xss {SCRIPT}"
    prompts:
      - raw: "{{{{ payload }}}} and {IMG}"
        label: "p{SCRIPT}"
    models:
      - path: fake://echo
        label: "m{IMG}"
        n_ctx: 64
    params:
      max_tokens: 32
    tests:
      - description: "t{SCRIPT}"
        vars:
          payload: "{SCRIPT}"
        assert:
          - type: contains
            value: "{SCRIPT}x"
    """
    out, html = run(project, cli, suite)
    row = json.loads((out / "results.jsonl").read_text(encoding="utf-8"))
    # The echo backend returns the prompt: the output itself carries both payloads.
    assert SCRIPT in row["output"]
    assert IMG in row["output"]
    assert SCRIPT not in html
    assert IMG not in html
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # ...in every place the text appears: title, var, output, prompt, labels, failed check.
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6


def test_report_is_self_contained(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE)
    lower = html.lower()
    assert "<script src" not in lower
    assert "<script" not in lower
    assert "<link" not in lower
    assert "@import" not in lower
    assert "url(" not in lower
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?://", lower)
    assert "http://" not in lower
    assert "https://" not in lower
    assert "<style>" in lower  # styles are inline


def test_grid_has_a_column_per_prompt_and_a_row_per_test(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE)
    (grid,) = tables(html, "grid")
    header, *rows = grid
    assert header == ["test", "p_name", "p_describe", "p_spell"]
    assert len(rows) == 3
    assert [r[0].split()[0] for r in rows] == ["t_apple", "t_pear", "t_plum"]
    assert all(len(r) == 4 for r in rows)
    apple, pear, plum = rows
    assert "thing: apple" in apple[0]
    assert apple[1].startswith("PASS")
    assert "Name apple" in apple[1]
    assert "Describe apple briefly" in apple[2]
    assert all(c.startswith("FAIL") for c in pear[1:])
    assert all(c.startswith("PASS") for c in plum[1:])


def test_failed_checks_are_listed_in_their_cell(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE)
    (grid,) = tables(html, "grid")
    pear = grid[2]
    for cell in pear[1:]:
        assert '✗ contains "banana": output does not contain "banana"' in cell
    apple = grid[1]
    assert all("✗" not in c for c in apple[1:])
    # The summary counts the failures too.
    summary = tables(html)[0]
    assert summary[0][:4] == ["model", "prompt", "pass rate", "mean score"]
    by_prompt = {r[1]: r for r in summary[1:]}
    assert by_prompt["p_name"][2:7] == ["67%", "0.667", "2", "1", "0"]


def test_error_rows_show_the_error(project: Project, cli: Cli) -> None:
    suite = GRID_SUITE.replace("fake://echo", "fake://echo?fail_on=plum")
    _, html = run(project, cli, suite)
    (grid,) = tables(html, "grid")
    plum = grid[3]
    for cell in plum[1:]:
        assert cell.startswith("ERROR")
        assert "simulated failure: prompt contains 'plum'" in cell


def test_models_get_a_grid_each(project: Project, cli: Cli) -> None:
    suite = GRID_SUITE.replace(
        "models:\n",
        "models:\n  - path: fake://reply?text=apple\n    label: replier\n    n_ctx: 64\n",
    )
    _, html = run(project, cli, suite)
    assert len(tables(html, "grid")) == 2
    assert "Outputs · model replier" in html
    assert "Outputs · model echo" in html


def _patch_manifest(out: Path, **model: Any) -> None:
    path = out / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["models"][0].update(model)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def test_footer_shows_model_quantization_and_gpu_offload(project: Project, cli: Cli) -> None:
    out, html = run(project, cli, GRID_SUITE)
    footer = html[html.index("<footer>") :]
    rows = {r[0]: r[1] for r in tables(footer)[0]}
    assert rows["status"] == "complete"
    assert rows["suite"].startswith("evals/suite.yaml (sha256 ")
    assert rows["git"] == "n/a"  # the project's .git marker is not a real repository
    assert "template p_name" in rows
    assert "GPU offload not supported, 0/0 layers on none" in rows["model echo"]

    # A real model's manifest entry (what the llama.cpp backend records).
    _patch_manifest(
        out,
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        architecture="llama",
        quantization="Q4_1",
        sha256="b179c9523d0e" + "0" * 52,
        chat_template_source="gguf:tokenizer.chat_template",
        runtime={
            "backend": "llama.cpp",
            "engine_version": "llama-cpp-python 0.3.36",
            "gpu_offload_supported": True,
            "layers_offloaded": 30,
            "n_layer": 30,
            "device": "CUDA0 (NVIDIA H100)",
        },
    )
    assert cli("report", out).code == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    rows = {r[0]: r[1] for r in tables(html[html.index("<footer>") :])[0]}
    line = rows["model echo"]
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in line
    assert "llama Q4_1" in line
    assert "sha256 b179c9523d0e" in line
    assert "chat template: gguf:tokenizer.chat_template" in line
    assert "llama-cpp-python 0.3.36" in line
    assert "GPU offload supported, 30/30 layers on CUDA0 (NVIDIA H100)" in line


def test_interrupted_run_is_marked(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE, "-m", "fake://echo?interrupt_after=4", code=130)
    assert "cells passed · <b>interrupted</b>" in html
    (grid,) = tables(html, "grid")
    # Every prompt keeps its column; what did not run says so. (Cells run in prefix order,
    # so which four ran is not the suite's first four.)
    assert grid[0] == ["test", "p_name", "p_describe", "p_spell"]
    cells = [c for row in grid[1:] for c in row[1:]]
    assert sum(c != "not run" for c in cells) == 4
    assert "not run" in cells
