"""report.html: escaped, self-contained, a ranked summary and chart, the grid's data (tests ×
variants, failed checks, filter flags) and a manifest footer. tests/reports/test_report_browser.py drives
the page in Chromium."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from conftest import CliResult, Project

from promptlab.reports.html import render_html
from promptlab.reports.page_data import embed_json, grid_data

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


def report_data(html: str) -> dict[str, Any]:
    """The cells the grid script draws, as embedded in the page."""
    m = re.search(r'<script type="application/json" id="promptlab-data">(.*?)</script>', html, re.S)
    assert m, "no embedded data"
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def grid(html: str) -> tuple[list[str], dict[str, list[list[dict[str, Any]] | None]]]:
    """Variant labels, and each test's cells (a list of repeats, or None: not run) by name."""
    data = report_data(html)
    return [v["label"] for v in data["variants"]], {t["name"]: t["cells"] for t in data["tests"]}


def summary_rows(html: str) -> dict[str, dict[str, str]]:
    """The ranked summary table, as {prompt: {column: text}}."""
    (table,) = tables(html, "summary")
    header, *rows = table
    return {row[2]: dict(zip(header, row, strict=True)) for row in rows}


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
    lower = html.lower()
    assert "<img" not in lower
    # Only the page's own two script elements: the JSON data and the grid script.
    assert lower.count("<script") == 2
    assert lower.count("</script") == 2
    # In the HTML parts (title, heading, summary, chart, manifest) the text is escaped...
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # ...and in the embedded data it is JSON with <, > and & as \u escapes, which the script
    # only ever puts into the page as textContent.
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in html
    data = report_data(html)
    (test,) = data["tests"]
    assert test["name"] == f"t{SCRIPT}"
    assert test["vars"] == {"payload": SCRIPT}
    (cell,) = test["cells"][0]
    assert cell["o"] == row["output"]
    assert data["variants"][0]["prompt"] == f"p{SCRIPT}"
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in html


def test_embedded_json_cannot_close_its_element() -> None:
    nasty = {"a": "</script><!-- <script>x</script> & \u2028\u2029", "nan": float("nan")}
    text = embed_json(nasty)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == {"a": nasty["a"], "nan": None}


def test_report_is_self_contained(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE)
    lower = html.lower()
    assert "<script src" not in lower
    assert "<link" not in lower
    assert "@import" not in lower
    assert "url(" not in lower
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?://", lower)
    assert "http://" not in lower
    assert "https://" not in lower
    assert "<style>" in lower  # styles are inline
    # The Content-Security-Policy allows no network at all and only the page's own script.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp
    policy = csp.group(1).replace("&#x27;", "'")
    assert "default-src 'none'" in policy
    m = re.search(r"<script>(.*?)</script>", html, re.S)
    assert m
    digest = base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


def test_summary_reads_without_javascript(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE)
    # Everything before the grid is plain HTML: the summary table, the chart, the manifest.
    static = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert '<table class="summary">' in static
    assert '<svg class="chart"' in static
    assert "<footer>" in static
    assert "<noscript>" in static  # the grid says it needs JavaScript
    # The grid's controls stay hidden until the script shows them.
    assert 'class="toolbar" id="toolbar" hidden' in static
    assert 'id="gridwrap" hidden' in static


def test_grid_has_a_column_per_prompt_and_a_row_per_test(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE)
    variants, tests = grid(html)
    assert variants == ["p_name", "p_describe", "p_spell"]
    assert list(tests) == ["t_apple", "t_pear", "t_plum"]
    data = report_data(html)
    assert data["tests"][0]["vars"] == {"thing": "apple"}
    apple, pear, plum = tests.values()
    assert all(cell is not None and len(cell) == 1 for cell in apple + pear + plum)
    assert [c[0]["s"] for c in apple] == ["pass"] * 3  # type: ignore[index]
    assert apple[0][0]["o"] == "Name apple"  # type: ignore[index]
    assert apple[1][0]["o"] == "Describe apple briefly"  # type: ignore[index]
    assert data["pool"][apple[1][0]["p"]] == "Describe apple briefly"  # type: ignore[index]
    assert [c[0]["s"] for c in pear] == ["fail"] * 3  # type: ignore[index]
    # t_plum has no checks: its outputs are no passes (nor failures)
    assert [c[0]["s"] for c in plum] == ["unchecked"] * 3  # type: ignore[index]


def test_failed_checks_are_in_their_cell_and_counted(project: Project, cli: Cli) -> None:
    _, html = run(project, cli, GRID_SUITE)
    _, tests = grid(html)
    for cell in tests["t_pear"]:
        (check,) = cell[0]["c"]  # type: ignore[index]
        assert check["pass"] is False
        assert check["check"] == 'contains "banana"'
        assert check["reason"] == 'output does not contain "banana"'
    assert all(c["pass"] for cell in tests["t_apple"] for c in cell[0]["c"])  # type: ignore[index]
    data = report_data(html)
    flags = {t["name"]: (t["failing"], t["disagree"], t["flaky"]) for t in data["tests"]}
    assert flags == {
        "t_apple": (False, False, False),
        "t_pear": (True, False, False),
        "t_plum": (False, False, False),
    }
    # The summary counts the failures too.
    rows = summary_rows(html)
    p_name = rows["p_name"]
    # Over the two checked tests: t_plum, which has no checks, counts in neither.
    assert p_name["pass rate"].split()[0] == "50%"
    assert p_name["mean score"].split()[0] == "0.500"
    assert [p_name[k] for k in ("passed", "failed", "errors", "no checks")] == ["1", "1", "0", "1"]


def test_error_rows_show_the_error(project: Project, cli: Cli) -> None:
    suite = GRID_SUITE.replace("fake://echo", "fake://echo?fail_on=plum")
    _, html = run(project, cli, suite)
    _, tests = grid(html)
    for cell in tests["t_plum"]:
        assert cell[0]["s"] == "error"  # type: ignore[index]
        assert "simulated failure: prompt contains 'plum'" in cell[0]["e"]  # type: ignore[index]


def test_models_are_columns_of_one_grid(project: Project, cli: Cli) -> None:
    suite = GRID_SUITE.replace(
        "models:\n",
        "models:\n  - path: fake://reply?text=apple\n    label: replier\n    n_ctx: 64\n",
    )
    _, html = run(project, cli, suite)
    variants, tests = grid(html)
    assert variants == [
        "replier · p_name",
        "replier · p_describe",
        "replier · p_spell",
        "echo · p_name",
        "echo · p_describe",
        "echo · p_spell",
    ]
    # The replier always says "apple".
    assert [cell[0]["o"] for cell in tests["t_pear"][:3]] == ["apple"] * 3  # type: ignore[index]
    assert len(summary_rows(html)) == 3  # keyed by prompt; one row per model × prompt
    assert len(tables(html, "summary")[0]) == 1 + 6


def _row(test: int, prompt: str, status: str, repeat: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "prompt": prompt,
        "test_index": test,
        "test": f"t{test}",
        "vars": {},
        "status": status,
        "repeat": repeat,
        "output": f"out {test} {prompt} {repeat}",
        "rendered_prompt": f"prompt {test} {prompt}",
        "checks": [],
        **extra,
    }


def test_filter_flags_failures_disagreements_and_flaky_tests() -> None:
    rows = [
        # t0: everyone passes every repeat.
        *(_row(0, p, "pass", r) for p in ("a", "b") for r in range(3)),
        # t1: a passes, b fails: a disagreement.
        *(_row(1, "a", "pass", r) for r in range(3)),
        *(_row(1, "b", "fail", r) for r in range(3)),
        # t2: both 2/3: flaky, but they agree.
        *(_row(2, p, "fail" if r == 1 else "pass", r) for p in ("a", "b") for r in range(3)),
        # t3: error and fail: both failing, no disagreement.
        *(_row(3, "a", "error", r) for r in range(3)),
        *(_row(3, "b", "fail", r) for r in range(3)),
    ]
    data = grid_data(rows, [], ["a", "b"])
    flags = {t["name"]: (t["failing"], t["disagree"], t["flaky"]) for t in data["tests"]}
    assert flags == {
        "t0": (False, False, False),
        "t1": (True, True, False),
        "t2": (True, False, True),
        "t3": (True, False, False),
    }
    assert data["repeats"] == 3
    # Repeats share their rendered prompt: stored once.
    assert len(data["pool"]) == 8
    assert [c["r"] for c in data["tests"][2]["cells"][0]] == [0, 1, 2]


def _summary(prompt: str, rate: float, lo: float, hi: float, rank: int) -> dict[str, Any]:
    return {
        "model": "m",
        "prompt": prompt,
        "setting": "",
        "cells": 20,
        "passed": round(rate * 20),
        "failed": 20 - round(rate * 20),
        "errors": 0,
        "pass_rate": rate,
        "pass_rate_lo": lo,
        "pass_rate_hi": hi,
        "mean_score": rate,
        "mean_score_lo": lo,
        "mean_score_hi": hi,
        "flake_rate": 0.1,
        "pass_at_k": 0.9,
        "pass_pow_k": 0.5,
        "k": 3,
        "rank": rank,
        "mean_latency_ms": 120.0,
        "mean_tokens_per_s": float("nan"),
    }


def test_summary_ranks_variants_with_intervals_chart_and_verdicts() -> None:
    summary = [
        _summary("zero_shot", 0.40, 0.22, 0.61, 3),
        _summary("few_shot", 0.85, 0.64, 0.95, 1),
        _summary("cot", 0.60, 0.39, 0.78, 2),
    ]
    comparisons = [
        {
            "dimension": "prompt",
            "group": "model: m",
            "a": "zero_shot",
            "b": "cot",
            "n_tests": 20,
            "diff": 20.0,
            "diff_lo": -5.0,
            "diff_hi": 45.0,
            "p_value": 0.2,
            "p_holm": 0.4,
            "significant": False,
            "verdict": "no detectable difference: cot vs zero_shot",
        },
        {
            "dimension": "prompt",
            "group": "model: m",
            "a": "zero_shot",
            "b": "few_shot",
            "n_tests": 20,
            "diff": 45.0,
            "diff_lo": 20.0,
            "diff_hi": 70.0,
            "p_value": 0.001,
            "p_holm": 0.003,
            "significant": True,
            "verdict": "few_shot beats zero_shot by +45 points [20, 70], p=0.003",
        },
    ]
    html = render_html({"suite": {"path": "s.yaml"}}, [], summary, comparisons)
    (table,) = tables(html, "summary")
    header, *rows = table
    assert header[:5] == ["#", "model", "prompt", "pass rate", "mean score"]
    assert [h for h in header if h.startswith(("flaky", "pass@", "pass^"))] == [
        "flaky",
        "pass@3",
        "pass^3",
    ]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert [r[2] for r in rows] == ["few_shot", "cot", "zero_shot"]
    assert rows[0][3] == "85% [64–95%]"
    assert rows[0][4] == "0.850 [0.64–0.95]"
    few = dict(zip(header, rows[0], strict=True))
    assert (few["flaky"], few["pass@3"], few["pass^3"], few["tok/s"]) == ("10%", "90%", "50%", "")
    # One bar and one error bar per variant, in rank order.
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert svg.count('class="bar"') == 3
    assert svg.count('class="err"') == 3
    assert svg.index("few_shot") < svg.index("cot") < svg.index("zero_shot")
    # Significant verdicts first, with their numbers.
    verdicts = html[html.index('<ol class="verdicts">') :]
    assert verdicts.index("few_shot beats zero_shot") < verdicts.index("no detectable difference")
    assert "Δ +45.0 pts [+20.0, +70.0]" in verdicts
    assert "Holm p=0.003" in verdicts


def test_summary_without_statistics_hides_them() -> None:
    plain = {
        k: v
        for k, v in _summary("a", 0.5, 0, 1, 1).items()
        if k
        in (
            "model",
            "prompt",
            "setting",
            "cells",
            "passed",
            "failed",
            "errors",
            "pass_rate",
            "mean_score",
            "mean_latency_ms",
            "mean_tokens_per_s",
        )
    }
    html = render_html({"suite": {"path": "s.yaml"}}, [], [plain], None)
    (table,) = tables(html, "summary")
    assert table[0][:4] == ["#", "model", "prompt", "pass rate"]
    assert table[1][3] == "50%"
    assert "flaky" not in table[0]
    assert 'class="err"' not in html
    assert '<ol class="verdicts">' not in html


def test_five_thousand_cells_render_quickly() -> None:
    rows = [
        _row(
            t,
            p,
            "pass" if (t + r) % 3 else "fail",
            r,
            logprobs={
                "tokens": ["a", " b"],
                "logprobs": [-0.1, -2.0],
                "top": [[["a", -0.1]], [[" b", -2.0]]],
            },
        )
        for t in range(1000)
        for p in ("a", "b", "c", "d", "e")
        for r in range(1)
    ]
    start = time.perf_counter()
    html = render_html({"suite": {"path": "s.yaml"}}, rows, [])
    assert time.perf_counter() - start < 3.0
    data = report_data(html)
    assert len(data["tests"]) == 1000
    assert data["pageSize"] == 50  # the script draws 50 tests at a time
    assert len(html) < 3_000_000


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
    assert re.search(r"cells passed(, \d+ with no checks)? · <b>interrupted</b>", html)
    variants, tests = grid(html)
    # Every prompt keeps its column; what did not run is None (the page says "not run").
    # (Cells run in prefix order, so which four ran is not the suite's first four.)
    assert variants == ["p_name", "p_describe", "p_spell"]
    cells = [c for row in tests.values() for c in row]
    assert sum(c is not None for c in cells) == 4
    assert None in cells
