"""report.html in a real browser: Debian's Chromium, driven by Playwright.

An example suite runs on the fake backend with a `<script>` planted in a variable and an
`<img onerror>` in a model output, two prompts (so there are comparisons), repeats at
temperature 0.8 with one check that only the first repeat passes (so there are flaky tests), an
error, and logprobs. The page must render with no console errors, its summary and chart must show,
the filters, search, pages and details must work, and the planted markup must stay inert text.
A screenshot, report.png, lands in the run folder, which is then copied to results/browser-test/
(gitignored) for CI to keep as an artifact.

Chromium comes from Debian's `chromium` package (.ci/run installs it); Playwright never downloads
a browser. Without /usr/bin/chromium the test skips, and fails in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptlab.cli import main

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture: a skip here, a failure in CI
    expect = sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "results" / "browser-test"  # a copy of the run folder, for CI
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'

SUITE = """
description: "browser check <b>bold?</b>"
prompts:
  - raw: "Say {{ thing }}"
    label: plain
  - raw: "Please say {{ thing }}"
    label: polite
models:
  - path: fake://echo?fail_on=boom
    label: echo
    n_ctx: 128
params:
  temperature: 0.8
  max_tokens: 32
  logprobs: 3
repeat: 3
tests:
  - description: t_apple
    vars: {thing: apple}
    assert:
      - type: icontains
        value: apple
  - description: t_please
    vars: {thing: cake}
    assert:
      - type: icontains
        value: please
  - description: t_polite
    vars: {thing: tea}
    assert:
      - type: starts-with
        value: Please
  - description: t_banana
    vars: {thing: pear}
    assert:
      - type: contains
        value: banana
  - description: t_flaky
    vars: {thing: coin}
    assert:
      - type: python
        value: file://checks.py:first_only
  - description: t_error
    vars: {thing: boom}
  - description: t_script
    vars: {thing: SCRIPT}
    assert:
      - type: icontains
        value: say
  - description: t_img
    vars: {thing: IMG}
    assert:
      - type: icontains
        value: say
  - description: t_more
    vars:
      thing: [one, two, three, four, five]
"""

CHECKS = """
_seen: dict = {}


def first_only(output, context):
    # Passes on the first repeat of each prompt x test only: a flaky test, deterministically.
    key = (context["prompt_label"], context["model"], context["test"]["description"])
    _seen[key] = _seen.get(key, 0) + 1
    return _seen[key] == 1
"""

ALL_TESTS = 13  # 8 + five from the `thing` list
FAILING = {"t_please", "t_polite", "t_banana", "t_flaky", "t_error"}
DISAGREE = {"t_please", "t_polite"}
FLAKY = {"t_flaky"}


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(
            f"{why}: CI must run the real-browser test (.ci/run installs Debian's chromium)"
        )
    pytest.skip(why)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the example suite on the fake backend, in a fresh folder (test runs may overlap)."""
    project = tmp_path_factory.mktemp("browser") / "proj"
    (project / ".git").mkdir(parents=True)
    # JSON strings are YAML double-quoted scalars.
    suite = SUITE.replace("SCRIPT", json.dumps(SCRIPT)).replace("IMG", json.dumps(IMG))
    (project / "suite.yaml").write_text(textwrap.dedent(suite), encoding="utf-8")
    (project / "checks.py").write_text(CHECKS, encoding="utf-8")
    out = project.parent / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        mp.setenv("PROMPTLAB_CACHE", str(project.parent / "cache"))
        with pytest.raises(SystemExit) as exc:
            main(["run", "suite.yaml", "-o", str(out), "--no-cache", "--allow-code"])
    assert exc.value.code == 100  # some checks fail, by design
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    if sync_playwright is None:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A page of report.html with every console error and page error collected."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.goto(url)

    def rows(self) -> list[str]:
        names: list[str] = self.page.locator("#grid tbody tr.trow .tname").all_inner_texts()
        return names

    def view(self, name: str) -> None:
        self.page.locator(f'.seg label:has(input[value="{name}"])').click()


@pytest.fixture
def page(browser: Any, run_dir: Path) -> Iterator[Page]:
    p = Page(browser, (run_dir / "report.html").as_uri())
    yield p
    p.page.close()
    assert p.errors == []


def _expected_names(run_dir: Path) -> list[str]:
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return list(dict.fromkeys(r["test"] for r in sorted(rows, key=lambda r: r["test_index"])))


def test_summary_table_and_chart_render(page: Page, run_dir: Path) -> None:
    pg = page.page
    summary = pg.locator("table.summary")
    assert summary.is_visible()
    assert summary.locator("tbody tr").count() == 2  # plain, polite
    assert sorted(summary.locator("tbody tr td.strong").all_inner_texts()) == ["plain", "polite"]
    chart = pg.locator("svg.chart")
    assert chart.is_visible()
    bars = chart.locator("rect.bar")
    assert bars.count() == 2  # one bar per variant
    assert all(float(bars.nth(i).get_attribute("width") or 0) > 0 for i in range(2))
    assert chart.locator("path.err").count() == 2  # the Wilson intervals
    # The title is text, not markup.
    assert pg.locator("h1").inner_text() == "browser check <b>bold?</b>"
    assert pg.locator("footer table.manifest").is_visible()
    pg.screenshot(path=str(run_dir / "report.png"), full_page=True)
    assert (run_dir / "report.png").stat().st_size > 10_000
    # The CI artifact: the whole run folder, screenshot included, where CI can find it.
    shutil.copytree(run_dir, ARTIFACTS, dirs_exist_ok=True)


def test_filters_search_and_pages(page: Page, run_dir: Path) -> None:
    pg = page.page
    names = _expected_names(run_dir)
    assert len(names) == ALL_TESTS
    assert page.rows() == names
    assert pg.locator('[data-count="failing"]').inner_text() == str(len(FAILING))

    page.view("failing")
    assert set(page.rows()) == FAILING
    page.view("disagree")
    assert set(page.rows()) == DISAGREE
    page.view("flaky")
    assert set(page.rows()) == FLAKY
    flaky_cells = pg.locator("#grid tbody td.cell")
    assert flaky_cells.count() == 2
    assert flaky_cells.nth(0).locator(".badge").inner_text() == "1/3 passed"

    page.view("all")
    pg.fill("#search", "PEAR")
    expect(pg.locator("#grid tbody tr.trow")).to_have_count(1)
    assert page.rows() == ["t_banana"]
    pg.fill("#search", "")
    expect(pg.locator("#grid tbody tr.trow")).to_have_count(ALL_TESTS)

    pg.select_option("#size", "10")
    assert page.rows() == names[:10]
    assert pg.locator("#page").inner_text() == "Page 1 of 2"
    assert pg.locator("#prev").is_disabled()
    pg.click("#next")
    assert page.rows() == names[10:]
    assert pg.locator("#page").inner_text() == "Page 2 of 2"
    assert pg.locator("#next").is_disabled()
    pg.click("#prev")
    assert page.rows() == names[:10]


def test_cell_details_show_prompt_checks_and_repeats(page: Page) -> None:
    pg = page.page
    apple = pg.locator("#grid tbody tr.trow", has_text="t_apple")
    apple.locator("td.cell").nth(1).click()  # polite
    details = pg.locator("#details")
    assert details.is_visible()
    assert "Please say apple" in details.inner_text()
    assert details.locator(".dsub").first.inner_text() == "polite"
    assert 'icontains "apple"' in details.locator("ul.checks").inner_text()
    assert details.locator(".reps button").count() == 3  # one per repeat
    details.locator(".reps button").nth(2).click()
    assert "repeat 2 · seed 2" in details.locator(".dbody .ctop").inner_text()
    pg.keyboard.press("Escape")
    assert details.is_hidden()

    # A flaky cell opens on its failing repeat, and names which repeat passed.
    page.view("flaky")
    pg.locator("#grid tbody td.cell").first.click()
    text = details.inner_text()
    assert "1 of 3 repeats passed" in text
    assert "first_only" in details.locator("ul.checks").inner_text()
    assert details.locator(".reps button.on").inner_text().startswith("✗")


def test_token_view_colours_tokens_with_alternatives(page: Page) -> None:
    pg = page.page
    pg.locator("#grid tbody tr.trow", has_text="t_apple").locator("td.cell").first.click()
    tokens = pg.locator("#details .tokens .tok")
    assert tokens.count() == 2  # "Say", " apple"
    assert [tokens.nth(i).inner_text() for i in range(2)] == ["Say", " apple"]
    title = tokens.nth(1).get_attribute("title") or ""
    assert title.startswith("p = 60.7%")  # exp(-0.5): the fake backend's logprob for "apple"
    assert '" apple~1"' in title and '" apple~2"' in title
    assert "rgba" in (tokens.nth(1).get_attribute("style") or "")
    # The grid can show tokens too.
    pg.keyboard.press("Escape")
    pg.check("#tokens")
    assert pg.locator("#grid tbody td.cell .tok").count() > 0


def test_planted_markup_stays_inert_text(page: Page) -> None:
    pg = page.page
    assert pg.evaluate("typeof window.__pwned") == "undefined"
    pg.fill("#search", "__pwned")
    expect(pg.locator("#grid tbody tr.trow")).to_have_count(2)
    grid_text = pg.locator("#grid tbody").inner_text()
    assert f"Say {SCRIPT}" in grid_text
    assert f"Please say {IMG}" in grid_text
    assert pg.locator("#grid img, #grid script, #details img").count() == 0
    pg.locator("#grid tbody tr.trow", has_text="t_script").locator("td.cell").first.click()
    assert SCRIPT in pg.locator("#details").inner_text()
    pg.check("#tokens")  # the token view is text as well
    assert pg.locator("#grid img, #grid script").count() == 0
    assert pg.evaluate("typeof window.__pwned") == "undefined"


def test_five_thousand_cells_open_fast(browser: Any, tmp_path: Path) -> None:
    from promptlab.reports.html import render_html

    words = [
        "the",
        "capital",
        "of",
        "France",
        "is",
        "Paris",
        "and",
        "it",
        "is",
        "a",
        "large",
        "city",
        "on",
        "the",
        "Seine",
    ]
    rows = [
        {
            "model": "m",
            "prompt": f"p{p}",
            "test_index": t,
            "test": f"test {t}",
            "vars": {"n": t, "text": " ".join(words) * 3},
            "status": "pass" if (t * 7 + p) % 5 else "fail",
            "output": " ".join(words[(t + p) % 5 :]) * 4,
            "rendered_prompt": f"Question {t}: " + " ".join(words) * 5,
            "checks": [{"check": "icontains x", "type": "icontains", "pass": True, "reason": "ok"}],
            "latency_ms": 100.0 + t,
            "logprobs": {
                "tokens": words,
                "logprobs": [-0.05 * i for i in range(len(words))],
                "top": [[[w, -0.05 * i], [w + "s", -3.0]] for i, w in enumerate(words)],
            },
        }
        for t in range(1000)
        for p in range(5)
    ]
    path = tmp_path / "report.html"
    path.write_text(render_html({"suite": {"path": "big.yaml"}}, rows, []), encoding="utf-8")
    p = Page(browser, path.as_uri())
    pg = p.page
    start = time.perf_counter()
    pg.reload()
    expect(pg.locator("#grid tbody tr.trow")).to_have_count(50)
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"5,000 cells took {elapsed:.1f}s to show"
    assert pg.locator("#grid tbody td.cell").count() == 250
    assert pg.locator("#page").inner_text() == "Page 1 of 20"
    pg.click("#next")
    assert p.rows()[0] == "test 50"
    p.view("failing")
    assert pg.locator('[data-count="failing"]').inner_text() == "1000"
    pg.check("#tokens")
    assert pg.locator("#grid tbody .tok").count() == 250 * len(words)
    pg.close()
    assert p.errors == []
