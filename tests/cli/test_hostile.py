"""Hostile inputs, one row each: whatever the files hold, `validate` and `run` end in bounded
time with one `error:` line that names the file (line, field) and the exit code the README
documents, never a traceback, and `run` leaves no run folder behind."""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliResult, Project

SUITE = "evals/s.yaml"
HEAD = 'prompts:\n  - "Hi {{ x }}"\nmodels: [fake://echo]\n'


@dataclass(frozen=True)
class Hostile:
    files: dict[str, str | bytes]
    expect: tuple[str, ...]  # pieces of the one error line
    commands: tuple[str, ...] = ("validate", "run")
    args: tuple[str, ...] = ()
    code: int = 2


def _suite(body: str) -> dict[str, str | bytes]:
    return {SUITE: HEAD + body}


def _billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["lol: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return (
        'prompts:\n  - "Hi {{ x }}"\nmodels: [fake://echo]\nassertionTemplates:\n'
        + "".join(f"  {line}\n" for line in lines)
        + f"tests:\n  - vars: {{x: *l{levels - 1}}}\n"
    )


def _gguf(body: bytes, n_kv: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + body


def _gguf_str(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


GGUF_SUITE = 'prompts:\n  - "Hi"\nmodels: [../m.gguf]\n'
PY_SUITE = (
    HEAD + "tests:\n  - vars: {x: a}\n    assert:\n      - {type: python, value: file://chk.py}\n"
)

CASES = [
    pytest.param(
        Hostile(
            {SUITE: _billion_laughs()},
            ("evals/s.yaml:", "aliases expand this to more than 1,000,000 values", "alias bomb"),
        ),
        id="billion-laughs",
    ),
    pytest.param(
        Hostile(
            _suite("assertionTemplates:\n  loop: &a [*a]\n"),
            ("evals/s.yaml:5:", "assertionTemplates.loop", "refers to the anchor that contains it"),
        ),
        id="recursive-alias",
    ),
    pytest.param(
        Hostile(
            _suite("tests:\n  - vars: {x: &m {a: 1, b: *m}}\n"),
            ("evals/s.yaml:5:", "tests[0].vars.x.b", "refers to the anchor that contains it"),
        ),
        id="recursive-alias-mapping",
    ),
    pytest.param(
        Hostile(
            _suite("tests:\n  - vars: {x: " + "[" * 1000 + "]" * 1000 + "}\n"),
            ("evals/s.yaml:5:", "nesting deeper than 100 levels", "flatten"),
        ),
        id="nesting-1000-deep",
    ),
    pytest.param(
        Hostile(
            {SUITE: HEAD + "tests: file://t.json\n", "evals/t.json": "[" * 5000 + "]" * 5000},
            ("evals/t.json", "nesting deeper than 100 levels"),
        ),
        id="json-nesting-5000-deep",
    ),
    pytest.param(
        Hostile(
            _suite("tests:\n  - vars: {x: 1" + "0" * 5000 + "}\n"),
            ("evals/s.yaml:5:", "is not a valid value", "quote it"),
        ),
        id="integer-of-5000-digits",
    ),
    pytest.param(
        Hostile(
            _suite("tests:\n  - vars: {x: 2001-13-45}\n"),
            ("evals/s.yaml:5:", "'2001-13-45' is not a valid value", "month must be in 1..12"),
        ),
        id="impossible-date",
    ),
    pytest.param(
        Hostile(
            _suite('tests:\n  - vars: {x: "\\udc80"}\n'),
            ("evals/s.yaml:5:", "tests[0].vars.x", "lone surrogate \\udc80"),
        ),
        id="surrogate-in-yaml-var",
    ),
    pytest.param(
        Hostile(
            {SUITE: 'prompts:\n  - {raw: "Hi", label: "\\ud800x"}\nmodels: [fake://echo]\n'},
            ("evals/s.yaml:2:", "prompts[0].label", "lone surrogate \\ud800"),
        ),
        id="surrogate-in-label",
    ),
    pytest.param(
        Hostile(
            {SUITE: 'prompts:\n  - "Hi \\udfff"\nmodels: [fake://echo]\n'},
            ("evals/s.yaml:2:", "prompts[0]", "lone surrogate \\udfff"),
        ),
        id="surrogate-in-prompt",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: HEAD + "tests: file://t.jsonl\n",
                "evals/t.jsonl": '{"vars": {"x": "ok"}}\n{"vars": {"x": "\\udc80"}}\n',
            },
            ("evals/t.jsonl:2:", "vars.x", "lone surrogate \\udc80"),
        ),
        id="surrogate-in-jsonl-test",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: HEAD + "tests:\n  - vars: {x: file://v.json}\n",
                "evals/v.json": '{"\\udc80": 1}',
            },
            ("evals/v.json", "lone surrogate \\udc80"),
        ),
        id="surrogate-in-json-var-file-key",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: HEAD + "tests: file://t.jsonl\n",
                "evals/t.jsonl": '{"vars": {"x": 1' + "0" * 5000 + "}}\n",
            },
            ("evals/t.jsonl:1:", "invalid JSON", "4300 digits"),
        ),
        id="jsonl-integer-of-5000-digits",
    ),
    pytest.param(
        Hostile(
            {SUITE: "prompts:\n  - \"{{ 'a' * 100000000000 }}\"\nmodels: [fake://echo]\n"},
            ("evals/s.yaml", "refused: * makes a value past 67108864 items"),
        ),
        id="template-string-times-1e11",
    ),
    pytest.param(
        Hostile(
            {SUITE: 'prompts:\n  - "{{ 9 ** 100000 }}"\nmodels: [fake://echo]\n'},
            ("evals/s.yaml", "refused: 9 ** 100000 is too large a number"),
        ),
        id="template-power-tower",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: 'prompts:\n  - "{{ '
                + "(" * 500
                + "1"
                + ")" * 500
                + ' }}"\nmodels: [fake://echo]\n'
            },
            ("evals/s.yaml:2:", "prompts[0]", "template nested too deeply"),
        ),
        id="template-nested-500-deep",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: "prompts:\n  - file://p.j2\nmodels: [fake://echo]\n",
                "evals/p.j2": "{% include './p.j2' %}",
            },
            ("p.j2: recursion too deep (does it include itself?)",),
        ),
        id="template-includes-itself",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: "prompts:\n  - file://p.j2\nmodels: [fake://echo]\n",
                "evals/p.j2": "{{ '\\udc80' }}",
            },
            ("p.j2: text holds a lone surrogate \\udc80",),
        ),
        id="template-renders-a-surrogate",
    ),
    pytest.param(
        Hostile(
            {SUITE: 'prompts: ["Hi"]\nmodels: [{path: "fake://echo", n_threads: 1.0e+30}]\n'},
            ("evals/s.yaml:2:", "models[0].n_threads"),
        ),
        id="n-threads-1e30",
    ),
    pytest.param(
        Hostile(
            {SUITE: 'prompts: ["Hi"]\nmodels: [{path: "fake://echo", n_threads: 5000}]\n'},
            ("evals/s.yaml:2:", "models[0].n_threads", "less than or equal to 1024"),
        ),
        id="n-threads-5000",
    ),
    pytest.param(
        Hostile(
            {SUITE: 'prompts: ["Hi"]\nmodels: [{path: "fake://echo", n_gpu_layers: 99999999}]\n'},
            ("evals/s.yaml:2:", "models[0].n_gpu_layers", "less than or equal to 10000"),
        ),
        id="n-gpu-layers-huge",
    ),
    pytest.param(
        Hostile(
            _suite("params: {top_k: 99999999999}\n"),
            ("evals/s.yaml:4:", "params.top_k", "less than or equal to 1000000"),
        ),
        id="top-k-huge",
    ),
    pytest.param(
        Hostile(
            _suite("params: {top_p: 1.0e-300}\n"),
            ("evals/s.yaml:4:", "params.top_p", "greater than or equal to 0.000001"),
        ),
        id="top-p-1e-300",
    ),
    pytest.param(
        Hostile(
            _suite("params: {repeat_penalty: 1.0e-300}\n"),
            ("evals/s.yaml:4:", "params.repeat_penalty", "greater than or equal to 0.01"),
        ),
        id="repeat-penalty-1e-300",
    ),
    pytest.param(
        Hostile(
            _suite("params: {temperature: [0, 1.0e-300]}\n"),
            ("evals/s.yaml:4:", "params.temperature", "greedy in effect; use 0"),
        ),
        id="temperature-1e-300-in-a-grid",
    ),
    pytest.param(
        Hostile(
            _suite("params: {max_tokens: 99999999999}\n"),
            ("evals/s.yaml:4:", "params.max_tokens", "less than or equal to 1048576"),
        ),
        id="max-tokens-huge",
    ),
    pytest.param(
        Hostile(
            _suite("tests:\n  - assert: [{type: levenshtein, value: Hi, threshold: .nan}]\n"),
            ("evals/s.yaml:5:", "tests[0].assert[0].threshold", "finite number"),
        ),
        id="levenshtein-threshold-nan",
    ),
    pytest.param(
        Hostile(
            _suite("tests:\n  - assert: [{type: levenshtein, value: Hi, threshold: -1}]\n"),
            ("evals/s.yaml:5:", "tests[0].assert[0].threshold", "greater than or equal to 0"),
        ),
        id="levenshtein-threshold-negative",
    ),
    pytest.param(
        Hostile(
            _suite("tests:\n  - assert: [{type: contains, value: Hi, weight: .inf}]\n"),
            ("evals/s.yaml:5:", "tests[0].assert[0].weight", "finite number"),
        ),
        id="weight-infinite",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: HEAD + "tests: file://t.csv\n",
                "evals/t.csv": "x,__expected,__config:__expected:threshold\na,levenshtein:Hi,nan\n",
            },
            ("evals/t.csv:2:", "threshold must be a finite number >= 0, got nan"),
        ),
        id="csv-threshold-nan",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: GGUF_SUITE,
                "m.gguf": _gguf(_gguf_str("x") + struct.pack("<IIQ", 9, 4, 2**62)),
            },
            ("m.gguf: corrupt GGUF header (array of 4611686018427387904 items)", "re-download"),
        ),
        id="gguf-array-of-2^62",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: GGUF_SUITE,
                "m.gguf": _gguf(_gguf_str("x") + struct.pack("<IIQ", 9, 8, 2**62)),
            },
            ("m.gguf: corrupt GGUF header (string array of 4611686018427387904 items)",),
        ),
        id="gguf-string-array-of-2^62",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: GGUF_SUITE,
                "m.gguf": _gguf(_gguf_str("x") + struct.pack("<IIQ", 9, 9, 2**62)),
            },
            ("m.gguf: corrupt GGUF header (array of arrays of 4611686018427387904 items)",),
        ),
        id="gguf-nested-array-of-2^62",
    ),
    pytest.param(
        Hostile(
            {
                SUITE: GGUF_SUITE,
                "m.gguf": _gguf(
                    _gguf_str("x") + struct.pack("<IIQ", 9, 8, 2) + _gguf_str("a") + b"\xff" * 8
                ),
            },
            ("m.gguf: corrupt GGUF header (string of 18446744073709551615 bytes)",),
        ),
        id="gguf-skipped-string-of-2^64",
    ),
    pytest.param(
        Hostile(
            {SUITE: PY_SUITE, "evals/chk.py": "import sys\nsys.exit(3)\n"},
            ("evals/s.yaml:7:", "importing", "chk.py failed: it called sys.exit(3)"),
            commands=("run",),
            args=("--allow-code",),
        ),
        id="python-check-exits-on-import",
    ),
    pytest.param(
        Hostile(
            {SUITE: PY_SUITE, "evals/chk.py": "raise ValueError('boom')\n"},
            ("evals/s.yaml:7:", "chk.py failed: ValueError: boom"),
            commands=("run",),
            args=("--allow-code",),
        ),
        id="python-check-raises-on-import",
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES)
def test_hostile_input_gets_one_line(
    case: Hostile, project: Project, cli: Callable[..., CliResult]
) -> None:
    for rel, text in case.files.items():
        path = project.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    out = project.root / "out"
    for command in case.commands:
        argv: list[str | Path] = [command, SUITE, *case.args]
        if command == "run":
            argv += ["-o", out]
        result = cli(*argv)
        assert result.code == case.code, (command, result.code, result.err)
        assert "Traceback" not in result.err
        lines = result.err.splitlines()
        assert len(lines) == 1, result.err
        assert lines[0].startswith("error: "), lines[0]
        assert "internal error" not in lines[0]
        for piece in case.expect:
            assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"
        if command == "run":
            assert not out.exists()
            assert not (project.root / "results").exists()


def test_long_csv_field_is_a_value(project: Project, cli: Callable[..., CliResult]) -> None:
    """A 200 KB document in one CSV cell (RAG suites) is past csv's default 128 KiB field limit."""
    doc = "lorem-ipsum-" * 17_000  # one word: the fake backend counts words as tokens
    project.write(SUITE, 'prompts:\n  - "{{ doc }}"\nmodels: [fake://echo]\ntests: file://t.csv\n')
    project.write("evals/t.csv", f'doc,__expected\n"{doc}",contains:ipsum-lorem\n')
    assert cli("validate", SUITE).code == 0
    result = cli("run", SUITE, "-o", project.root / "out")
    assert result.code == 0, result.err
    (row,) = (project.root / "out" / "results.jsonl").read_text().splitlines()
    assert json.loads(row)["vars"]["doc"] == doc


def test_python_check_that_exits_fails_its_check(
    project: Project, cli: Callable[..., CliResult]
) -> None:
    """sys.exit() inside a check is that check's failure, not promptlab's exit code."""
    project.write(SUITE, PY_SUITE)
    project.write("evals/chk.py", "import sys\ndef get_assert(output, context):\n    sys.exit(3)\n")
    result = cli("run", SUITE, "-o", project.root / "out", "--allow-code")
    assert result.code == 100, result.err
    assert "Traceback" not in result.err
    row = json.loads((project.root / "out" / "results.jsonl").read_text())
    assert row["status"] == "fail"
    assert row["checks"][0]["reason"] == "UserCodeExit: it called sys.exit(3)"


def test_damaged_cache_page_costs_lookups_not_the_run(
    project: Project, cli: Callable[..., CliResult]
) -> None:
    """One overwritten table page: the damaged entries are recomputed with a note; the run (and
    the rerun) finish with every row instead of stopping halfway."""
    n = 600
    project.write("evals/t.csv", "x\n" + "".join(f"w{i}\n" for i in range(n)))
    project.write(
        SUITE, HEAD.replace("Hi {{ x }}", "Say {{ x }} " + "pad " * 40) + "tests: file://t.csv\n"
    )
    assert cli("run", SUITE, "-o", project.root / "first").code == 0
    db = project.root / ".promptlab" / "cache.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    conn.close()
    with db.open("r+b") as f:  # a leaf page of the entries table, half way through
        f.seek(size * (pages // 2))
        f.write(b"\xff" * size)
    for name in ("second", "third"):
        result = cli("run", SUITE, "-o", project.root / name)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        assert "cache lookup(s) failed" in result.out + result.err
        assert f"delete {db}" in " ".join((result.out + result.err).split())
        rows = (project.root / name / "results.jsonl").read_text().splitlines()
        assert len(rows) == n
        manifest = json.loads((project.root / name / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        cache = manifest["cache"]
        assert 0 < cache["read_errors"] < n
        assert cache["hits"] + cache["misses"] == n
