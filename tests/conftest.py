"""Shared fixtures: a throwaway project folder and an in-process CLI runner."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from promptlab.cli import main


@dataclass
class Project:
    root: Path

    def write(self, rel: str, text: str | bytes) -> Path:
        """Write a file (text is dedented) and return its path."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path


@pytest.fixture(autouse=True)
def _no_code_consent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits consent to run code from the environment or the user's trust file."""
    monkeypatch.delenv("PROMPTLAB_ALLOW_CODE", raising=False)
    monkeypatch.setenv("PROMPTLAB_CONFIG", str(tmp_path / "config"))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project root (marked as a git work tree) that is also the current directory."""
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PROMPTLAB_CACHE", str(tmp_path / "cache"))
    return Project(root)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `promptlab ARGS` in-process; returns exit code, stdout and stderr."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(int(exc.value.code or 0), captured.out, captured.err)

    return run
