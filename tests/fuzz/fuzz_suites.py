"""A seeded mutation fuzzer for suites: whatever the files hold, promptlab must end cleanly.

It starts from valid suites (evals/*.yaml and tests/promptfoo_examples/*), copies one into a
fresh project, changes one thing (a field's type, size or encoding, a YAML feature, a file
reference, a CSV/JSONL test file, a template, a GGUF header, a Python check) and runs
`promptlab validate` and `promptlab run --model fake://echo` on it in a forked child with a
timeout. Each case is classified:

  clean           ended with a documented exit code, and an input error was one `error:` line
  internal        a traceback or "internal error" (a bug: every bad input is an InputError)
  hang            did not finish within the timeout
  accepted-bad    a mutation known to be invalid was accepted by validate
  partial-output  run refused the input (exit 2) but left a run folder behind
  validate-missed validate accepted what run then refused as bad input (exit 2)
  wrong-exit      an exit code outside 0, 1, 2, 100, 130 (or a crash)

    python tests/fuzz/fuzz_suites.py --cases 400 --seed 1 [--show internal,hang] [--keep DIR]

The children are forked from a process that has imported promptlab once, so a case costs
milliseconds of start-up, not an interpreter's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "promptfoo_examples"
DOCUMENTED = {0, 1, 2, 100, 130}
KINDS = (
    "clean",
    "internal",
    "hang",
    "accepted-bad",
    "partial-output",
    "validate-missed",
    "wrong-exit",
)


@dataclass
class Seed:
    name: str
    folder: Path  # copied whole into the case's project
    suite: str  # the suite's path inside the folder


@dataclass
class Case:
    number: int
    seed: Seed
    mutation: str
    bad: bool  # the mutated input is invalid: validate must refuse it
    run: bool = True  # also run it (False where only the header matters, e.g. a GGUF file)
    files: dict[str, bytes] = field(default_factory=dict)  # written over the seed's copy


@dataclass
class Outcome:
    command: str
    code: int | None  # None: killed after the timeout
    err: str
    seconds: float
    out_exists: bool = False


def seeds() -> list[Seed]:
    found = [
        Seed(f"evals/{p.name}", REPO, f"evals/{p.name}")
        for p in sorted((REPO / "evals").glob("*.yaml"))
    ]
    for folder in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        for suite in sorted(folder.glob("promptfooconfig*.yaml")):
            found.append(Seed(f"{folder.name}/{suite.name}", folder, suite.name))
    # Mutations edit a mapping at the top level, as every valid suite has.
    return [s for s in found if isinstance(yaml.safe_load((s.folder / s.suite).read_text()), dict)]


# --- mutations -------------------------------------------------------------------------------
# Each takes (rng, suite text, parsed data, case) and fills case.files / case.mutation / case.bad.

ODD_SCALARS: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    10**30,
    float("nan"),
    float("inf"),
    -float("inf"),
    1e-300,
    1e300,
    "",
    " ",
    "x" * 100_000,
    "\u202e\u0000\x1b[31m",
    "{{ undefined_var }}",
    "{% for %}",
    "file://nope.txt",
    "file:///etc/passwd",
    "file://../../../outside.txt",
    "file://*.nothing",
    [],
    [[]],
    {},
    {"a": {"b": {"c": None}}},
    ["x"] * 1000,
]
NUMERIC_FIELDS = {
    ("params", "temperature"): [-1, 1e-300, 1e30, float("nan"), "hot"],
    ("params", "top_p"): [0, 1e-300, 2, float("nan")],
    ("params", "top_k"): [-1, 10**12, 1.5],
    ("params", "max_tokens"): [0, -5, 10**12, float("inf")],
    ("params", "repeat_penalty"): [0, 1e-300, 1e9, float("nan")],
    ("params", "seed"): [-1, 2**64, 1.5],
    ("params", "min_p"): [-0.1, 2, float("nan")],
    ("params", "logprobs"): [-1, 1000],
    ("repeat",): [0, -1, 10**9, 1.5],
}
MODEL_FIELDS = {
    "n_threads": [0, 10**30, 1e30, -1, 5000],
    "n_gpu_layers": [-2, 10**8],
    "n_ctx": [0, 1, 10**12],
    "n_batch": [0, 10**12],
    "parallel": [0, 1000, "many"],
    "prefix_chunk": [0, 10**9],
}
ASSERT_FIELDS = {
    "threshold": [float("nan"), -1, float("inf"), 1e300],
    "weight": [-1, float("nan"), float("inf")],
}


def _dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000).encode(
        "utf-8", "surrogateescape"
    )


def _nodes(data: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in the data (mapping values and list items)."""
    out = [loc]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _nodes(value, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _nodes(value, (*loc, i))
    return out


def _set(data: Any, loc: tuple[Any, ...], value: Any) -> Any:
    if not loc:
        return value
    node = data
    for part in loc[:-1]:
        node = node[part]
    node[loc[-1]] = value
    return data


def _get(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        data = data[part]
    return data


def m_type(rng: random.Random, text: str, data: Any, case: Case) -> None:
    locs = _nodes(data)[1:]
    loc = rng.choice(locs)
    value = rng.choice(ODD_SCALARS)
    _set(data, loc, value)
    case.mutation = f"type: {'.'.join(map(str, loc))} = {repr(value)[:40]}"
    case.files[case.seed.suite] = _dump(data)


def m_numeric(rng: random.Random, text: str, data: Any, case: Case) -> None:
    choice = rng.randrange(3)
    if choice == 0:
        loc, values = rng.choice(list(NUMERIC_FIELDS.items()))
        if len(loc) == 2 and not isinstance(data.get(loc[0]), dict):
            data[loc[0]] = {}
    elif choice == 1:
        name, values = rng.choice(list(MODEL_FIELDS.items()))
        data["models"] = [{"path": "fake://echo", name: None}]
        loc = ("models", 0, name)
    else:
        name, values = rng.choice(list(ASSERT_FIELDS.items()))
        check: dict[str, Any] = {"type": "levenshtein", "value": "x"}
        data.setdefault("tests", [])
        if not isinstance(data["tests"], list):
            data["tests"] = [data["tests"]]
        data["tests"].append({"vars": {}, "assert": [check]})
        loc = ("tests", len(data["tests"]) - 1, "assert", 0, name)
    value = rng.choice(values)
    _set(data, loc, value)
    case.mutation = f"number: {'.'.join(map(str, loc))} = {value!r}"
    case.bad = True
    case.files[case.seed.suite] = _dump(data)


def _billion_laughs(levels: int, width: int) -> str:
    lines = ["  l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines)


def m_yaml(rng: random.Random, text: str, data: Any, case: Case) -> None:
    """YAML features: aliases, bombs, loops, depth, tags, duplicates, odd scalars."""
    kind = rng.choice(
        ["bomb", "loop", "deep", "moderate", "bigint", "date", "tag", "binary", "dup", "merge"]
    )
    extra = {
        "bomb": "assertionTemplates:\n" + _billion_laughs(rng.choice([6, 9]), 9) + "\n",
        "loop": "assertionTemplates: &a\n  x: *a\n",
        "deep": "metadata: " + "[" * 1000 + "]" * 1000 + "\n",
        "moderate": "metadata: " + "[" * 60 + "]" * 60 + "\n",
        "bigint": "repeat: 1" + "0" * 5000 + "\n",
        "date": "metadata: 2001-13-45\n",
        "tag": "metadata: !!python/object/apply:os.system [echo pwned]\n",
        "binary": "metadata: !!binary 'a'\n",
        "dup": "description: one\ndescription: two\n",
        "merge": "assertionTemplates:\n  base: &b {type: contains, value: x}\n  m: {<<: *b, value: y}\n",
    }[kind]
    bad = kind in ("bomb", "loop", "deep", "bigint", "date", "tag", "binary", "dup")
    if kind == "bomb" and "l5:" in extra and "l8:" not in extra:
        bad = False  # 9^6 = 531,441 values: under the limit, and must still end in time
    case.mutation = f"yaml: {kind}"
    case.bad = bad
    body = text
    # Top-level keys the seed already has would make a duplicate; drop them first.
    key = extra.split(":", 1)[0]
    lines = [ln for ln in body.splitlines() if not ln.startswith(f"{key}:")]
    if kind in ("bomb", "loop", "merge") and any(
        ln.startswith("assertionTemplates:") for ln in body.splitlines()
    ):
        case.mutation += " (skipped: seed has assertionTemplates)"
        case.bad = False
        lines = body.splitlines()
        extra = ""
    case.files[case.seed.suite] = ("\n".join(lines) + "\n" + extra).encode()


def m_bytes(rng: random.Random, text: str, data: Any, case: Case) -> None:
    """Encoding and raw damage: truncation, flipped bytes, BOM, CRLF, NUL, invalid UTF-8."""
    raw = text.encode("utf-8")
    kind = rng.choice(["truncate", "flip", "bom", "crlf", "nul", "latin1", "tabs", "surrogate"])
    if kind == "truncate":
        raw = raw[: rng.randrange(1, max(2, len(raw)))]
    elif kind == "flip":
        buf = bytearray(raw)
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(buf))
            buf[i] = rng.randrange(32, 127)
        raw = bytes(buf)
    elif kind == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif kind == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    elif kind == "nul":
        raw = raw[:10] + b"\x00" + raw[10:]
        case.bad = True
    elif kind == "latin1":
        raw = raw + b"\n# caf\xe9\n"
        case.bad = True
    elif kind == "tabs":
        raw = raw.replace(b"  ", b"\t", 1)
    elif kind == "surrogate":
        raw = raw + b'\nmetadata: "\\udc80"\n'
        lines = [ln for ln in raw.split(b"\n") if not ln.startswith(b"metadata:")]
        raw = b"\n".join(lines) + b'\nmetadata: {x: "\\udc80"}\n'
        case.bad = True
    case.mutation = f"bytes: {kind}"
    case.files[case.seed.suite] = raw


def _str_locs(data: Any) -> list[tuple[Any, ...]]:
    return [loc for loc in _nodes(data) if loc and isinstance(_get(data, loc), str)]


def m_surrogate(rng: random.Random, text: str, data: Any, case: Case) -> None:
    """A lone surrogate in a string the suite already has (a var, a label, a prompt...)."""
    locs = _str_locs(data)
    if not locs:
        return m_type(rng, text, data, case)
    loc = rng.choice(locs)
    _set(data, loc, _get(data, loc) + "\udc80")
    case.mutation = f"surrogate: {'.'.join(map(str, loc))}"
    case.bad = True
    # PyYAML writes a lone surrogate as a \udc80 escape in double quotes.
    case.files[case.seed.suite] = yaml.safe_dump(data, sort_keys=False, width=1000).encode()
    return None


def m_size(rng: random.Random, text: str, data: Any, case: Case) -> None:
    """Size: a long string, many tests, a long list."""
    kind = rng.choice(["long-string", "many-tests", "long-prompt"])
    if kind == "long-string":
        locs = _str_locs(data)
        if locs:
            loc = rng.choice(locs)
            if not str(_get(data, loc)).startswith("file://"):
                _set(data, loc, str(_get(data, loc)) + "y" * rng.choice([10_000, 300_000]))
    elif kind == "many-tests":
        tests = data.get("tests")
        if isinstance(tests, list) and tests:
            # Big but finite: ~300 tests (a few thousand cells once list vars expand) must
            # end well inside the timeout; 2,000 made 18,000 cells, slow rather than hung.
            data["tests"] = tests * (300 // len(tests) + 1)
    else:
        data["prompts"] = ["{{ 'x' }} " * 20_000]
    case.mutation = f"size: {kind}"
    case.files[case.seed.suite] = _dump(data)


def m_csv(rng: random.Random, text: str, data: Any, case: Case) -> None:
    """Tests from a CSV file with something odd in it."""
    kind = rng.choice(
        [
            "long-field",
            "ragged",
            "no-header",
            "bad-column",
            "unbalanced-quote",
            "nul",
            "dup-header",
            "expected",
            "threshold",
            "bom-crlf",
        ]
    )
    body = {
        "long-field": 'q,doc\nhi,"' + "w" * 200_000 + '"\n',
        "ragged": "q,doc\nhi,a,b,c\n",
        "no-header": "",
        "bad-column": "q,my col\nhi,x\n",
        "unbalanced-quote": 'q,doc\nhi,"open\n',
        "nul": "q,doc\nhi,\x00\n",
        "dup-header": "q,q\nhi,ho\n",
        "expected": "q,__expected\nhi,"
        + rng.choice(["javascript:1", "regex:[", "python:", "similar(2):x", "is-json", "x" * 5000])
        + "\n",
        "threshold": "q,__expected,__config:__expected:threshold\nhi,levenshtein:x,"
        + rng.choice(["nan", "-1", "inf", "abc", "1e400"])
        + "\n",
        "bom-crlf": "\ufeffq,doc\r\nhi,there\r\n",
    }[kind]
    case.bad = kind in ("ragged", "no-header", "bad-column", "nul", "threshold")
    if kind == "expected" and "x" * 5000 not in body and "is-json" not in body:
        case.bad = True
    folder = Path(case.seed.suite).parent
    data["tests"] = "file://fuzz.csv"
    data["prompts"] = ["Q: {{ q }}"]
    case.files[str(folder / "fuzz.csv")] = body.encode("utf-8")
    case.mutation = f"csv: {kind}"
    case.files[case.seed.suite] = _dump(data)


def m_jsonl(rng: random.Random, text: str, data: Any, case: Case) -> None:
    kind = rng.choice(["deep", "surrogate", "nan", "not-object", "bad-line", "huge-number", "ok"])
    line = {
        "deep": '{"vars": {"q": ' + "[" * 3000 + "]" * 3000 + "}}",
        "surrogate": '{"vars": {"q": "\\ud800"}}',
        "nan": '{"vars": {"q": NaN}, "assert": [{"type": "levenshtein", "value": "x", "threshold": NaN}]}',
        "not-object": "[1, 2, 3]",
        "bad-line": '{"vars": ',
        "huge-number": '{"vars": {"q": 1' + "0" * 5000 + "}}",
        "ok": '{"vars": {"q": "fine"}}',
    }[kind]
    case.bad = kind not in ("ok", "huge-number")
    folder = Path(case.seed.suite).parent
    data["tests"] = "file://fuzz.jsonl"
    data["prompts"] = ["Q: {{ q }}"]
    case.files[str(folder / "fuzz.jsonl")] = ('{"vars": {"q": "a"}}\n' + line + "\n").encode()
    case.mutation = f"jsonl: {kind}"
    case.files[case.seed.suite] = _dump(data)


def m_template(rng: random.Random, text: str, data: Any, case: Case) -> None:
    kind = rng.choice(
        ["syntax", "undefined", "self-include", "huge-mult", "huge-range", "surrogate", "deep"]
    )
    body = {
        "syntax": "{% if %}",
        "undefined": "{{ nope.deeper }}",
        "self-include": "{% include 'fuzz.j2' %}",
        "huge-mult": "{{ 'a' * 100000000000 }}",
        "huge-range": "{% for i in range(10**12) %}x{% endfor %}",
        "surrogate": "{{ '\\udc80' }}",
        "deep": "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    }[kind]
    case.bad = kind in ("syntax", "undefined", "self-include", "huge-mult", "huge-range")
    folder = Path(case.seed.suite).parent
    case.files[str(folder / "fuzz.j2")] = body.encode()
    data["prompts"] = ["file://fuzz.j2"]
    case.mutation = f"template: {kind}"
    case.files[case.seed.suite] = _dump(data)


def _gguf_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def m_gguf(rng: random.Random, text: str, data: Any, case: Case) -> None:
    kind = rng.choice(
        ["array-2^62", "strings-2^62", "nested", "string-2^64", "kv-2^62", "type", "short", "ftype"]
    )
    kv = {
        "array-2^62": (1, _gguf_str("a") + struct.pack("<IIQ", 9, 4, 2**62)),
        "strings-2^62": (1, _gguf_str("a") + struct.pack("<IIQ", 9, 8, 2**62)),
        "nested": (1, _gguf_str("a") + struct.pack("<IIQ", 9, 9, 2**62)),
        "string-2^64": (1, _gguf_str("a") + struct.pack("<IQ", 8, 2**64 - 1)),
        "kv-2^62": (2**62, _gguf_str("a") + struct.pack("<IB", 0, 1)),
        "type": (1, _gguf_str("a") + struct.pack("<I", 99)),
        "short": (3, _gguf_str("general.architecture")),
        "ftype": (1, _gguf_str("general.file_type") + struct.pack("<I", 8) + _gguf_str("Q4")),
    }[kind]
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, kv[0]) + kv[1]
    folder = Path(case.seed.suite).parent
    case.files[str(folder / "fuzz.gguf")] = header
    data["models"] = ["fuzz.gguf"]
    case.bad = kind != "ftype"
    case.run = False  # a header llama.cpp would then try to load: validate is the check here
    case.mutation = f"gguf: {kind}"
    case.files[case.seed.suite] = _dump(data)


def m_python(rng: random.Random, text: str, data: Any, case: Case) -> None:
    kind = rng.choice(["exit", "raise", "syntax", "no-function", "exit-in-check", "ok"])
    body = {
        "exit": "import sys\nsys.exit(3)\n",
        "raise": "raise RuntimeError('boom')\n",
        "syntax": "def get_assert(:\n",
        "no-function": "x = 1\n",
        "exit-in-check": "import sys\ndef get_assert(output, context):\n    sys.exit(7)\n",
        "ok": "def get_assert(output, context):\n    return True\n",
    }[kind]
    case.bad = kind in ("exit", "raise", "syntax", "no-function")
    folder = Path(case.seed.suite).parent
    case.files[str(folder / "fuzz_check.py")] = body.encode()
    data["tests"] = [{"vars": {}, "assert": [{"type": "python", "value": "file://fuzz_check.py"}]}]
    data["prompts"] = ["Hi"]
    case.mutation = f"python: {kind}"
    case.files[case.seed.suite] = _dump(data)


def m_fileref(rng: random.Random, text: str, data: Any, case: Case) -> None:
    kind = rng.choice(["missing", "directory", "outside", "binary", "self", "glob-none", "abs"])
    folder = Path(case.seed.suite).parent
    target = {
        "missing": "file://nope.yaml",
        "directory": "file://.",
        "outside": "file://../../../../../../etc/hostname",
        "binary": "file://fuzz.bin",
        "self": f"file://{Path(case.seed.suite).name}",
        "glob-none": "file://*.nothing",
        "abs": "file:///etc/hostname",
    }[kind]
    case.files[str(folder / "fuzz.bin")] = bytes(range(256)) * 4
    where = rng.choice(["tests", "prompts", "var"])
    if where == "tests":
        data["tests"] = target
    elif where == "prompts":
        data["prompts"] = [target]
    else:
        data["tests"] = [{"vars": {"x": target}}]
        data["prompts"] = ["Hi {{ x }}"]
    case.bad = not (kind == "self" and where == "var")
    case.mutation = f"file ref: {kind} in {where}"
    case.files[case.seed.suite] = _dump(data)


MUTATIONS: list[tuple[Callable[[random.Random, str, Any, Case], None], int]] = [
    (m_type, 6),
    (m_numeric, 4),
    (m_yaml, 4),
    (m_bytes, 3),
    (m_surrogate, 2),
    (m_size, 2),
    (m_csv, 3),
    (m_jsonl, 2),
    (m_template, 2),
    (m_gguf, 2),
    (m_python, 2),
    (m_fileref, 2),
]


def make_case(rng: random.Random, number: int, pool: list[Seed]) -> Case:
    seed = rng.choice(pool)
    text = (seed.folder / seed.suite).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    case = Case(number, seed, "", bad=False)
    funcs = [f for f, w in MUTATIONS for _ in range(w)]
    rng.choice(funcs)(rng, text, data, case)
    return case


# --- running ---------------------------------------------------------------------------------


def _child(argv: list[str], cwd: Path, err_path: Path) -> None:
    """In the forked child: run the CLI in-process, stdout discarded, stderr to a file."""
    os.chdir(cwd)
    os.setsid()  # its own process group, so a hang can be killed with whatever it started
    devnull = os.open(os.devnull, os.O_WRONLY)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(devnull, 1)
    os.dup2(err, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb"), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb"), encoding="utf-8", errors="backslashreplace")
    code = 1
    try:
        from promptlab.cli import main

        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what main() let through is itself a finding
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


def run_cli(argv: list[str], cwd: Path, timeout: float) -> Outcome:
    err_path = cwd / f".fuzz-{argv[0]}.err"
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _child(argv, cwd, err_path)
        finally:
            os._exit(98)
    code: int | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - start > timeout:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    seconds = time.monotonic() - start
    err = err_path.read_text(encoding="utf-8", errors="replace") if err_path.exists() else ""
    err_path.unlink(missing_ok=True)
    return Outcome(argv[0], code, err, seconds)


def _problem(outcome: Outcome) -> str | None:
    if outcome.code is None:
        return "hang"
    if "Traceback" in outcome.err or "internal error" in outcome.err:
        return "internal"
    if outcome.code not in DOCUMENTED:
        return "wrong-exit"
    if outcome.code == 2 and not any(ln.startswith("error: ") for ln in outcome.err.splitlines()):
        return "wrong-exit"  # a refusal without its error line
    return None


def classify(case: Case, root: Path, timeout: float) -> tuple[str, list[Outcome]]:
    suite = str(Path(case.seed.suite))
    # Run and validate see the same model (fake://echo), so validate-missed compares like with
    # like; a GGUF case keeps its own model, whose header is what is being checked.
    override = ["--model", "fake://echo"] if case.run else []
    validate = run_cli(["validate", suite, *override], root, timeout)
    outcomes = [validate]
    problem = _problem(validate)
    if problem:
        return problem, outcomes
    if case.bad and validate.code == 0:
        return "accepted-bad", outcomes
    if not case.run:
        return "clean", outcomes
    out = root / "fuzz-out"
    run = run_cli(
        ["run", suite, "--model", "fake://echo", "-o", str(out), "--no-cache", "--allow-code"],
        root,
        timeout,
    )
    run.out_exists = out.exists()
    outcomes.append(run)
    problem = _problem(run)
    if problem:
        return problem, outcomes
    if run.code == 2 and run.out_exists:
        return "partial-output", outcomes
    if validate.code == 0 and run.code == 2 and "python code" not in run.err.lower():
        return "validate-missed", outcomes
    return "clean", outcomes


def materialize(case: Case, base: Path) -> Path:
    root = base / f"case{case.number}"
    if case.seed.folder == REPO:
        (root / "evals").mkdir(parents=True)
        for sub in ("evals", "prompts"):
            if (REPO / sub).is_dir():
                shutil.copytree(REPO / sub, root / sub, dirs_exist_ok=True)
    else:
        shutil.copytree(case.seed.folder, root)
    (root / ".git").mkdir(exist_ok=True)  # a project root of its own
    for rel, raw in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
    return root


@dataclass
class Report:
    tally: Counter[str]
    findings: list[tuple[str, Case, list[Outcome]]]
    seconds: float


def fuzz(
    cases: int,
    seed: int,
    timeout: float = 10.0,
    keep: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Report:
    rng = random.Random(seed)
    pool = seeds()
    tally: Counter[str] = Counter()
    findings: list[tuple[str, Case, list[Outcome]]] = []
    start = time.monotonic()
    # The children inherit the parent's environment: keep them off the user's caches and config.
    work = Path(tempfile.mkdtemp(prefix="promptlab-fuzz-"))
    saved = {k: os.environ.get(k) for k in ("PROMPTLAB_CACHE", "PROMPTLAB_CONFIG")}
    os.environ["PROMPTLAB_CACHE"] = str(work / "cache")
    os.environ["PROMPTLAB_CONFIG"] = str(work / "config")
    import promptlab.cli  # noqa: F401 - imported once, inherited by every fork

    try:
        for number in range(cases):
            case = make_case(rng, number, pool)
            root = materialize(case, work)
            kind, outcomes = classify(case, root, timeout)
            tally[kind] += 1
            if kind != "clean":
                findings.append((kind, case, outcomes))
                if keep is not None:
                    shutil.copytree(root, keep / f"{kind}-{number}", dirs_exist_ok=True)
            if log is not None:
                codes = "/".join(str(o.code) for o in outcomes)
                log(f"{number:4d} {kind:15s} {codes:8s} {case.seed.name}: {case.mutation}")
            shutil.rmtree(root, ignore_errors=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(work, ignore_errors=True)
    return Report(tally, findings, time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per command")
    parser.add_argument("--keep", type=Path, help="copy every failing case's project here")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    report = fuzz(
        args.cases,
        args.seed,
        args.timeout,
        args.keep,
        log=print if args.verbose else None,
    )
    for kind, case, outcomes in report.findings:
        print(f"\n[{kind}] case {case.number} {case.seed.name}: {case.mutation}")
        for o in outcomes:
            print(f"  {o.command}: exit {o.code} in {o.seconds:.1f}s")
            for line in o.err.strip().splitlines()[-3:]:
                print(f"    {line[:300]}")
    total = sum(report.tally.values())
    print(f"\n{total} cases (seed {args.seed}) in {report.seconds:.0f}s:")
    print("  " + ", ".join(f"{k} {report.tally.get(k, 0)}" for k in KINDS))
    print(json.dumps(dict(report.tally)))
    return 0 if report.tally.get("clean", 0) == total else 1


if __name__ == "__main__":
    sys.exit(main())
