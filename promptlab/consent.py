"""Consent to run the user's Python: it comes from the person, never from the suite.

A suite file is data that may come from anywhere, so nothing in it can allow code. `python`
checks and Python transforms run only during `promptlab run` (never `validate` or `render`), and
only when the person running it said so in one of three ways:

- `--allow-code` on the command line;
- `PROMPTLAB_ALLOW_CODE=1` in the environment (for CI jobs);
- `promptlab trust [DIR]`, which records the project root in the user's own config folder
  (`$PROMPTLAB_CONFIG`, else `$XDG_CONFIG_HOME/promptlab`, else ~/.config/promptlab), outside
  every project, like direnv's `allow` or an editor's workspace trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from promptlab.errors import InputError

ENV_VAR = "PROMPTLAB_ALLOW_CODE"
HOW = (
    "pass --allow-code to `promptlab run`, set PROMPTLAB_ALLOW_CODE=1, "
    "or trust the project once with `promptlab trust`"
)


class ConsentError(InputError):
    """User code named by a suite that `run` may not execute: the person has not consented."""


class CodeMode(Enum):
    """What preparing a check may do with user code."""

    CHECK = "check"  # validate/render: read and parse it, never execute it
    REFUSE = "refuse"  # run without consent: any code is an error
    RUN = "run"  # run with consent: import and call it


@dataclass(frozen=True)
class Consent:
    granted: bool
    source: str | None = None  # "--allow-code", "PROMPTLAB_ALLOW_CODE", "promptlab trust"


def config_dir() -> Path:
    explicit = os.environ.get("PROMPTLAB_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "promptlab"


def trust_file() -> Path:
    return config_dir() / "trusted-projects.json"


def _env_consent() -> bool:
    value = os.environ.get(ENV_VAR)
    if value is None or value.strip() == "":
        return False
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InputError(
        f"{ENV_VAR}={value!r} is neither on nor off",
        hint=f"set {ENV_VAR}=1 to allow code, or unset it",
    )


def trusted() -> dict[str, dict[str, Any]]:
    """Trusted project roots → when they were trusted."""
    path = trust_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot read the trusted projects: {exc}",
            hint="fix or delete the file, then `promptlab trust` again",
        ) from None
    projects = data.get("projects") if isinstance(data, dict) else None
    return {str(k): v for k, v in projects.items()} if isinstance(projects, dict) else {}


def _save(projects: dict[str, dict[str, Any]]) -> None:
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trusted-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"projects": projects}, f, indent=2, sort_keys=True)
        f.write("\n")
    Path(tmp).replace(path)


def trust(root: Path) -> Path:
    """Record `root` as a project whose Python code may run; returns the trust file."""
    projects = trusted()
    projects[str(root.resolve())] = {
        "trusted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")
    }
    _save(projects)
    return trust_file()


def revoke(root: Path) -> bool:
    projects = trusted()
    removed = projects.pop(str(root.resolve()), None) is not None
    if removed:
        _save(projects)
    return removed


def for_run(flag: bool, root: Path) -> Consent:
    """Whether the person running `promptlab run` allowed code in the project at `root`."""
    if flag:
        return Consent(True, "--allow-code")
    if _env_consent():
        return Consent(True, ENV_VAR)
    if str(root.resolve()) in trusted():
        return Consent(True, "promptlab trust")
    return Consent(False)
