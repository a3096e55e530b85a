"""The picture of docs/architecture.md, enforced: import rules (import-linter contracts in
pyproject.toml) that cover every module, and no module over 600 lines without a stated reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "promptlab"
CONTRACTS: list[dict[str, Any]] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
    "importlinter"
]["contracts"]
# For each forbidden contract: the top-level modules that may import what it forbids.
ALLOWED = {
    "pandas": {"promptlab.reports"},
    "llama_cpp": {"promptlab.backends"},
    "httpx": {"promptlab.backends"},
    "typer": {"promptlab.cli"},
    "rich": {"promptlab.cli", "promptlab.console"},
    "huggingface_hub": {"promptlab.models"},
    # The engine is a source too: only its distributed/ subpackage is exempt (ignore_imports).
    "ray": set(),
}
MAX_LINES = 600
# Over 600 lines, pending their split by concern (issue 13, the lead's part): remove an entry
# once its module is split.
PENDING_SPLIT: set[str] = set()
# A module over the limit says why in its first lines, in these words.
REASON = re.compile(r"^# Over 600 lines: \S", re.M)


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the promptlab package under `root`, with the contracts of `config`."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [str(exe), "--no-cache", "--config", str(config)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def top_level_modules() -> set[str]:
    """promptlab's top-level modules and packages, as dotted names (the root itself left out)."""
    names = {f"promptlab.{p.stem}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    names |= {f"promptlab.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    return names


def contract(ident: str) -> dict[str, Any]:
    return next(c for c in CONTRACTS if c["id"] == ident)


def test_the_import_contracts_hold() -> None:
    r = lint_imports(REPO, REPO / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in r.stdout


def test_every_top_level_module_has_its_place_in_the_layers() -> None:
    named = {name.strip() for layer in contract("pipeline")["layers"] for name in layer.split(":")}
    assert top_level_modules() == named


@pytest.mark.parametrize("ident", sorted(ALLOWED))
def test_a_forbidden_import_is_forbidden_to_every_other_module(ident: str) -> None:
    """A new module is covered only once it is listed; this names the ones that are not."""
    sources = {s for s in contract(ident)["source_modules"] if s.count(".") == 1}
    assert top_level_modules() - sources == ALLOWED[ident]


@pytest.mark.parametrize(
    ("module", "line", "ident"),
    [
        ("engine/store.py", "import pandas", "pandas"),
        ("suite/schema.py", "import llama_cpp", "llama_cpp"),
        ("core.py", "import typer", "typer"),
        ("running.py", "import pandas", "pandas"),
        ("reports/compare.py", "from rich.console import Console", "rich"),
        ("engine/runner.py", "from huggingface_hub import HfApi", "huggingface_hub"),
        ("engine/runner.py", "from promptlab import cli", "pipeline"),
        ("optimize/run.py", "from promptlab import core", "pipeline"),
        ("optimize/report.py", "from rich.console import Console", "rich"),
        ("scoring/text.py", "from promptlab.suite import load_suite", "pipeline"),
        ("engine/runner.py", "from promptlab.backends import llama", "protocol"),
        ("engine/servers.py", "from promptlab.backends import openai", "protocol"),
        ("plan/servers.py", "import httpx", "httpx"),
        ("engine/runner.py", "import ray", "ray"),
        ("engine/tune.py", "import ray", "ray"),
    ],
)
def test_a_violating_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, ident: str
) -> None:
    """The contracts are live: one bad import in a copy of the package is caught."""
    shutil.copytree(PACKAGE, tmp_path / "promptlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "promptlab" / module
    target.write_text(target.read_text() + f"\n{line}  # the violation\n")
    r = lint_imports(tmp_path, tmp_path / "pyproject.toml")
    assert r.returncode == 1, r.stdout + r.stderr
    report = " ".join(r.stdout.split())
    assert f"{contract(ident)['name']} BROKEN" in report, r.stdout
    assert f"Contracts: {len(CONTRACTS) - 1} kept, 1 broken." in report, r.stdout


@pytest.mark.parametrize("module", ["engine/distributed/pool.py", "engine/distributed/driver.py"])
def test_the_ray_code_may_import_ray(tmp_path: Path, module: str) -> None:
    """The ray contract's exception is live too: engine/distributed/ may import it directly."""
    shutil.copytree(PACKAGE, tmp_path / "promptlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "promptlab" / module
    target.write_text(target.read_text() + "\nimport ray  # allowed here\n")
    r = lint_imports(tmp_path, tmp_path / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in r.stdout


def test_no_module_is_over_600_lines_without_a_reason_at_its_top() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        head = "\n".join(text.splitlines()[:3])
        if n > MAX_LINES and rel not in PENDING_SPLIT and not REASON.search(head):
            too_long.append(f"{rel}: {n} lines")
    assert too_long == [], "split these, or say why at the top: # Over 600 lines: <reason>"


def test_the_pending_splits_are_still_pending() -> None:
    """An entry of PENDING_SPLIT whose module got short (or went away) is removed."""
    for rel in sorted(PENDING_SPLIT):
        path = PACKAGE / rel
        assert path.is_file() and len(path.read_text().splitlines()) > MAX_LINES, rel
