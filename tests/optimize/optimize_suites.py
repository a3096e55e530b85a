"""Fake-backend suites for the optimize tests (imported as `from optimize_suites import ...`).

DEMO: fake://echo repeats the prompt, and a test passes when the prompt shows its own label as
"[label]", which only demos can put there: the zero-shot prompt fails every test, any demo set
that holds both labels passes every test. A real improvement, so optimize must find it.

NULL: fake://rules answers x or y at random for each (instruction, input) pair, and the
labels are random too, so no candidate is better than another on any population of tests:
whatever wins on validation wins by luck, and optimize must say nothing beat the baseline.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml
from conftest import Project

DEMO_TEMPLATE = """\
{{ instruction }}
{% for d in demos %}[{{ d.answer }}] {{ d.q }}
{% endfor %}Q: {{ q }}
"""


def demo_tests(n: int = 60, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "description": f"t{i}",
            "vars": {"q": f"question {i}", "answer": rng.choice(["pos", "neg"])},
        }
        for i in range(n)
    ]


def demo_suite(
    project: Project,
    *,
    name: str = "evals/demo.yaml",
    model: str = "fake://echo",
    optimize: dict[str, Any] | None = None,
    tests: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    project.write("prompts/label.j2", DEMO_TEMPLATE)
    suite: dict[str, Any] = {
        "prompts": [{"id": "file://../prompts/label.j2", "label": "zero"}],
        "models": [model],
        "vars": {"demos": [], "instruction": "Answer."},
        "defaultTest": {"assert": [{"type": "contains", "value": "[{{ answer }}]"}]},
        "optimize": optimize
        if optimize is not None
        else {
            "demos": {"k": [0, 1, 2], "sets": 4},
            "instructions": {"var": "instruction", "variants": ["Answer with the label."]},
        },
        "tests": tests if tests is not None else demo_tests(),
        **(extra or {}),
    }
    return project.write(name, yaml.safe_dump(suite, sort_keys=False))


def null_suite(project: Project, seed: int, *, n: int = 60, variants: int = 5) -> Path:
    """Random answers per (instruction, input), random labels: a true null."""
    rng = random.Random(f"null:{seed}")
    instructions = [f"i{j}" for j in range(variants + 1)]
    rules = {f"<{i}|w{w}>": rng.choice(["x", "y"]) for i in instructions for w in range(n)}
    folder = f"null{seed}"
    project.write(f"{folder}/rules.json", json.dumps(rules))
    suite = {
        "prompts": [{"raw": "<{{ instruction }}|{{ word }}>", "label": "base"}],
        "models": ["fake://rules?file=rules.json"],
        "vars": {"instruction": instructions[0]},
        "defaultTest": {"assert": [{"type": "equals", "value": "{{ label }}"}]},
        "optimize": {
            "instructions": {"var": "instruction", "variants": instructions[1:]},
            "minibatch": 6,
        },
        "tests": [{"vars": {"word": f"w{w}", "label": rng.choice(["x", "y"])}} for w in range(n)],
    }
    return project.write(f"{folder}/suite.yaml", yaml.safe_dump(suite, sort_keys=False))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
