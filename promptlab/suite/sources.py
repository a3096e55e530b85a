"""Prompts and tests read from files: prompt files (text, `---`-separated, chat JSON/YAML, CSV)
and test files (CSV, JSONL, YAML, JSON).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from functools import partial
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta

from promptlab import files, scoring
from promptlab.errors import InputError, Unsupported, location
from promptlab.files import read_text
from promptlab.suite.entries import _CODE_REF, TestEntries
from promptlab.suite.loaded import CheckDef, PromptDef, TestDef
from promptlab.suite.problems import _rel
from promptlab.suite.promptfoo import _CSV_REFUSED, _CSV_SPECIAL, _check_type
from promptlab.suite.schema import PromptSpec, TestSpec
from promptlab.templates import sha256_text
from promptlab.yamlio import YamlDoc, dotted, load_json, load_yaml

_PROMPT_FILE_SUFFIXES = (".txt", ".md", ".j2", ".jinja", ".jinja2", ".json", ".yaml", ".yml")


# A CSV field may be as long as a file may be (whole documents in RAG suites), not csv's 128 KiB.
csv.field_size_limit(files.MAX_FILE_BYTES)


class Sources(TestEntries):
    """Prompts and tests read from files: prompt files (text, chat, CSV) and test files (CSV, JSONL,
    YAML, JSON)."""

    def prompt(self, i: int, spec: PromptSpec, doc: YamlDoc) -> list[PromptDef]:
        prompts = self._prompt(i, spec, doc)
        for prompt in prompts:
            prompt.config = spec.config
        return prompts

    def _prompt(self, i: int, spec: PromptSpec, doc: YamlDoc) -> list[PromptDef]:
        where = self.where(doc.line_of(("prompts", i)), f"prompts[{i}]")
        if spec.messages is not None:
            return [self._messages_prompt(i, spec, spec.messages, doc, where)]
        source = spec.raw if spec.raw is not None else spec.id
        assert source is not None
        label = spec.label or spec.display
        ref = self._prompt_ref(source, where) if spec.raw is None else None
        if ref is not None:
            paths = self.file_ref(ref, where, "prompt file")
            out: list[PromptDef] = []
            for path in paths:
                # a glob gives one prompt per file, each named by its file
                name = label if len(paths) == 1 or label is None else f"{label}:{path.stem}"
                out += self._prompt_file(path, name, where)
            return out
        if not source.strip():
            raise InputError(f"{where}: prompt is empty", hint="write the template text")
        label = label or (spec.id if spec.raw is not None and spec.id else None)
        tpl = self.env.from_string(source, where)
        self._chat_text_note(source, where)
        kind: Literal["text"] = "text"
        return [
            PromptDef(
                label=label or _inline_label(source),
                source="inline",
                kind=kind,
                parts=[(None, tpl)],
                sha256=sha256_text(source),
                where=where,
                variables=self.env.variables(tpl, source),
            )
        ]

    def _prompt_ref(self, source: str, where: str) -> str | None:
        """The file a prompt entry names, or None for inline text. A bare path with a prompt
        file's suffix (promptfoo's older form, `prompts: [prompts.txt]`) counts as a file."""
        if source.startswith("file://"):
            ref = source
        elif (
            source.strip() == source
            and not any(ch.isspace() or ch in "{}" for ch in source)
            and Path(source.split(":")[0]).suffix.lower()
            in (*_PROMPT_FILE_SUFFIXES, ".csv", ".jsonl", ".py", ".js")
        ):
            ref = "file://" + source
        else:
            return None
        raw = ref.removeprefix("file://")
        if _CODE_REF.search(raw):
            raise Unsupported(
                f"{where}: {raw} is a prompt function; promptlab's prompts are templates, not code",
                hint="write it as a .j2/.txt template or a .yaml/.json message list",
            )
        if Path(raw).suffix.lower() == ".jsonl":
            raise InputError(
                f"{where}: {raw}: .jsonl prompt files (one chat per line) are not read",
                hint="put each chat in a .json prompt file, or list the prompts in a .csv file",
            )
        return ref

    def _prompt_file(self, path: Path, label: str | None, where: str) -> list[PromptDef]:
        if path.is_dir():
            raise InputError(f"{where}: {path} is a directory, expected a template file")
        text = read_text(path, "template")
        self.record(path, text)
        if not text.strip():
            raise InputError(f"{path}: template is empty", hint="write the template text")
        rel = _rel(path, self.root)
        if path.suffix.lower() == ".csv":
            return self._csv_prompts(path, text, label, where)
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            parts, variables = self._chat_file(path, text)
            return [
                PromptDef(
                    label or path.stem, rel, "messages", parts, sha256_text(text), where, variables
                )
            ]
        chunks = _split_prompts(text) if path.suffix.lower() == ".txt" else None
        if chunks == []:
            raise InputError(f"{path}: the file holds only --- lines", hint="write the prompts")
        if chunks is not None:
            # promptfoo's .txt format: several prompts separated by lines of ---
            out = []
            for k, chunk in enumerate(chunks, 1):
                name = label or path.stem
                at = f"{where} ({rel}, prompt {k} of {len(chunks)})"
                tpl = self.env.from_string(chunk, at)
                out.append(
                    PromptDef(
                        f"{name}:{k}" if len(chunks) > 1 else name,
                        rel,
                        "text",
                        [(None, tpl)],
                        sha256_text(chunk),
                        at,
                        self.env.variables(tpl, chunk),
                    )
                )
            return out
        # promptfoo trims a .txt prompt (as it trims each --- chunk); other files keep their text
        # exactly as written, trailing newline included.
        tpl = self.env.load_file(path, where, trim=path.suffix.lower() == ".txt")
        return [
            PromptDef(
                label or path.stem,
                rel,
                "text",
                [(None, tpl)],
                sha256_text(text),
                where,
                self.env.variables(tpl),
            )
        ]

    def _csv_prompts(self, path: Path, text: str, label: str | None, where: str) -> list[PromptDef]:
        """promptfoo's prompts.csv: one prompt per row, under a `prompt` header with an optional
        `label` column, or one column and no header. Cells are trimmed, as promptfoo trims them."""
        rel = _rel(path, self.root)
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
        try:
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader]
        except csv.Error as exc:
            raise InputError(f"{location(path, reader.line_num)}: invalid CSV: {exc}") from None
        rows = [(line, row) for line, row in rows if any(row)]
        header = [c.lower() for c in rows[0][1]] if rows else []
        if "prompt" in header:
            col = header.index("prompt")
            label_col = header.index("label") if "label" in header else None
            body = rows[1:]
        else:
            col, label_col, body = 0, None, rows
            wide = next(((line, row) for line, row in body if len(row) > 1), None)
            if wide is not None:
                raise InputError(
                    f"{location(path, wide[0])}: a prompts CSV without a `prompt` header has one "
                    f"column, but this row has {len(wide[1])}",
                    hint="add a header row `prompt,label`, or quote a prompt that holds commas",
                )
        kept = [(line, row) for line, row in body if len(row) > col and row[col]]
        if not kept:
            raise InputError(f"{path}: no prompts in the CSV", hint="write one prompt per row")
        out = []
        for k, (line, row) in enumerate(kept, 1):
            source = row[col]
            own = row[label_col] if label_col is not None and len(row) > label_col else ""
            base = label or path.stem
            name = own or (base if len(kept) == 1 else f"{base}:{k}")
            at = f"{where} ({location(rel, line)})"
            tpl = self.env.from_string(source, at)
            self._chat_text_note(source, at)
            out.append(
                PromptDef(
                    name,
                    rel,
                    "text",
                    [(None, tpl)],
                    sha256_text(source),
                    at,
                    self.env.variables(tpl, source),
                )
            )
        return out

    def _chat_file(
        self, path: Path, text: str
    ) -> tuple[list[tuple[str | None, jinja2.Template]], set[str]]:
        if path.suffix.lower() == ".json":
            data = load_json(path, text)
            doc = None
        else:
            doc = load_yaml(path, text)
            data = doc.data
        entries: list[tuple[Any, tuple[int | str, ...]]] = []
        if isinstance(data, dict) and "messages" in data:
            # Anthropic's shape, as promptfoo passes it on: {system?, messages: [...]}
            extra = sorted(set(data) - {"messages", "system"})
            if extra:
                raise InputError(
                    f"{path}: a chat prompt mapping holds messages: (and system:), not {extra}"
                )
            if "system" in data:
                entries.append(({"role": "system", "content": data["system"]}, ("system",)))
            if isinstance(data["messages"], list):
                entries += [(m, ("messages", j)) for j, m in enumerate(data["messages"])]
        elif isinstance(data, list):
            entries = [(m, (j,)) for j, m in enumerate(data)]
        if not entries:
            raise InputError(
                f"{path}: a chat prompt file must hold a non-empty list of {{role, content}} messages"
            )
        return self._message_parts(
            [
                (msg, location(path, doc.line_of(loc) if doc else None, dotted(loc)))
                for msg, loc in entries
            ],
            file_refs=False,
        )

    def _messages_prompt(
        self, i: int, spec: PromptSpec, messages: list[Any], doc: YamlDoc, where: str
    ) -> PromptDef:
        """promptfoo's `messages:` prompt entry: a chat written in the suite itself."""
        if not messages:
            raise InputError(f"{where}: messages: is empty", hint="add {role, content} messages")
        entries = [
            (
                msg,
                self.where(
                    doc.line_of(("prompts", i, "messages", j)), f"prompts[{i}].messages[{j}]"
                ),
            )
            for j, msg in enumerate(messages)
        ]
        parts, variables = self._message_parts(entries, file_refs=True)
        label = spec.label or spec.display or f"chat {i + 1}"
        source = json.dumps(messages, ensure_ascii=False, sort_keys=True)
        return PromptDef(label, "inline", "messages", parts, sha256_text(source), where, variables)

    def _message_parts(
        self, entries: list[tuple[Any, str]], *, file_refs: bool
    ) -> tuple[list[tuple[str | None, jinja2.Template]], set[str]]:
        """Each message's content as a template, and the variables they read. With `file_refs`,
        a content of `file://path` is that template file (as promptfoo's `messages:` allow)."""
        parts: list[tuple[str | None, jinja2.Template]] = []
        variables: set[str] = set()
        for msg, at in entries:
            if not isinstance(msg, dict) or set(msg) - {"role", "content"} or "content" not in msg:
                raise InputError(f"{at}: each message needs exactly `role` and `content`")
            role = msg.get("role", "user")
            if role not in ("system", "user", "assistant"):
                raise InputError(
                    f"{at}: unknown role {role!r}", hint="use system, user or assistant"
                )
            content = msg["content"]
            if isinstance(content, list):
                content = self._content_parts(content, at)
            if not isinstance(content, str):
                raise InputError(f"{at}: content must be text (or a list of text parts)")
            if file_refs and content.startswith("file://"):
                tpl = self._content_file(content, at)
                parts.append((role, tpl))
                variables |= self.env.variables(tpl)
                continue
            tpl = self.env.from_string(content, at)
            parts.append((role, tpl))
            # Inline templates have no name to reread, so their variables come from the source.
            variables |= self.env.variables(tpl, content)
        return parts, variables

    def _content_file(self, ref: str, at: str) -> jinja2.Template:
        raw = ref.removeprefix("file://")
        if _CODE_REF.search(raw):
            raise Unsupported(
                f"{at}: content {ref} is a prompt function; promptlab's prompts are templates, "
                "not code",
                hint="write that message as text or a .j2/.txt/.md template file",
            )
        (path,) = files.resolve_ref(
            ref, base=self.base, root=self.root, what="message file", where=at, globs=False
        )
        if path.is_dir():
            raise InputError(f"{at}: {path} is a directory, expected a template file")
        self.record(path, read_text(path, "template"))
        # promptfoo reads every format as text (a .json file too); each message is stripped
        # like any chat message, so only a .txt needs promptfoo's trim for the text to agree.
        return self.env.load_file(path, at, trim=path.suffix.lower() == ".txt")

    def _chat_text_note(self, text: str, where: str) -> None:
        """promptfoo turns a prompt whose text is a JSON message list into a chat for chat
        providers; here text stays text (no guessing), so say what differs and how to write it."""
        stripped = text.strip()
        if not (stripped.startswith("[") and stripped.endswith("]")):
            return
        try:
            data = json.loads(stripped)
        except ValueError:
            return
        if data and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in data):
            self.notes.append(
                f"{where}: this prompt is a JSON chat message list written as text; promptlab "
                "sends it as text (promptfoo sends it to chat providers as messages); write it "
                "as messages: or a .json prompt file to send messages"
            )

    def _content_parts(self, parts: list[Any], at: str) -> str:
        """OpenAI/Anthropic content parts → one template: the text parts joined in order."""
        texts = []
        for k, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text" or not isinstance(part.get("text"), str):
                raise Unsupported(
                    f"{at}: content[{k}] is a {kind!r} part, and local text models take text only",
                    hint="remove it, or describe it in a {type: text, text: ...} part",
                )
            extra = sorted(set(part) - {"type", "text", "cache_control"})
            if extra:
                raise InputError(f"{at}: content[{k}]: unknown keys {extra} in a text part")
            if "cache_control" in part:
                self.ignore(at, "cache_control", "prompt caching is a remote API's feature")
            texts.append(part["text"])
        return "".join(texts)

    def tests_file(self, path: Path) -> list[TestDef]:
        text = read_text(path, "test file")
        self.record(path, text)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return self._csv(path, text)
        if suffix == ".jsonl":
            out = []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                test = self.attempt(
                    "test", location(path, n), partial(self._test_jsonl, path, line, n)
                )
                out += [test] if test is not None else []
            return out
        if suffix in (".yaml", ".yml", ".json"):
            if suffix == ".json":
                data = load_json(path, text)
                doc = None
            else:
                doc = load_yaml(path, text, what="test file")
                data = doc.data
            if data is None:
                raise InputError(f"{path}: test file is empty", hint="add a list of tests")
            if not isinstance(data, list):
                raise InputError(f"{path}: a test file must hold a list of tests")
            tests = []
            for i, d in enumerate(data):
                at = doc.line_of((i,)) if doc else None
                test = self.attempt(
                    "test", location(path, at), partial(self._test_obj, d, path, at, doc, i)
                )
                tests += [test] if test is not None else []
            return tests
        raise Unsupported(
            f"{path}: unsupported test file type '{suffix}'",
            hint="use .csv, .jsonl, .yaml or .json",
        )

    def _test_jsonl(self, path: Path, line: str, n: int) -> TestDef | None:
        return self._test_obj(load_json(path, line, n), path, n, None)

    def _test_obj(
        self, data: Any, path: Path, line: int | None, doc: YamlDoc | None, index: int | None = None
    ) -> TestDef | None:
        where = location(path, line)
        if not isinstance(data, dict):
            raise InputError(f"{where}: a test must be a mapping with vars: and assert:")
        prefix: tuple[int | str, ...] = (index,) if index is not None and doc is not None else ()
        spec = self.validate(TestSpec, data, doc, prefix, line, what="test", path=path)
        if spec is None:
            return None
        checks = []
        for j, a in enumerate(spec.assert_):
            at = f"{where}: assert[{j}]"
            check = self.attempt("check", at, partial(self.check, a, at))
            if check is not None:
                checks.append(check)
        return self.finish(TestDef(0, spec.description, spec.vars, checks, where), spec)

    def _csv(self, path: Path, text: str) -> list[TestDef]:
        reader = csv.DictReader(io.StringIO(text))
        columns = reader.fieldnames or []
        if not columns:
            raise InputError(
                f"{path}: CSV has no header row", hint="the first row names the variables"
            )
        for col in columns:
            if col in _CSV_REFUSED:
                raise Unsupported(
                    f"{location(path, 1)}: promptfoo's column '{col}' is not supported: "
                    f"{_CSV_REFUSED[col]}"
                )
            if col.startswith("__config:") and not _CSV_SPECIAL.fullmatch(col):
                raise InputError(
                    f"{location(path, 1)}: unsupported column '{col}'",
                    hint="a __config column sets one check's threshold: "
                    "__config:__expected2:threshold",
                )
            if col.startswith("__") and not _CSV_SPECIAL.fullmatch(col):
                known = ["__expected", "__description", "__metric", "__threshold", "__metadata:"]
                close = difflib.get_close_matches(col, known, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "promptlab reads __expected, __expectedN, __description, __metric, "
                    "__threshold, __metadata:KEY and __config:__expectedN:threshold"
                )
                raise InputError(f"{location(path, 1)}: unsupported column '{col}'", hint=hint)
            if not col.startswith("__") and not col.isidentifier():
                raise InputError(
                    f"{location(path, 1)}: column {col!r} is not a valid variable name",
                    hint="use letters, digits and _",
                )
        var_cols = {c for c in columns if not c.startswith("__")}
        out = []
        for row in reader:
            line = reader.line_num
            where = location(path, line)
            if None in row:
                self.problems.append(
                    InputError(f"{where}: row has more cells than the header has columns")
                )
                continue
            checks: dict[str, CheckDef] = {}
            for col in columns:
                if col.startswith("__expected") and (row.get(col) or "").strip():
                    at = f"{where}: {col}"
                    check = self.attempt("check", at, partial(self._expected, row[col], at))
                    if check is not None:
                        checks[col] = check
            metric = (row.get("__metric") or "").strip()
            metadata: dict[str, Any] = {}
            for col in columns:
                cell = (row.get(col) or "").strip()
                if not cell:
                    continue
                if col.startswith("__config:"):
                    target = col.split(":")[1]
                    if target in checks:
                        checks[target].threshold = _csv_number(cell, f"{where}: {col}")
                elif col.startswith("__metadata:"):
                    key = col.removeprefix("__metadata:")
                    if key.endswith("[]"):
                        # promptfoo: comma-separated, with \\, for a literal comma
                        metadata[key[:-2]] = [
                            item.strip().replace("\\,", ",") for item in re.split(r"(?<!\\),", cell)
                        ]
                    else:
                        metadata[key] = cell
            if metric:
                for check in checks.values():
                    check.extra["metric"] = metric
            threshold = (row.get("__threshold") or "").strip()
            tdef = TestDef(
                0,
                row.get("__description") or None,
                {c: row[c] or "" for c in var_cols},
                list(checks.values()),
                where,
                csv_columns=var_cols,
                threshold=_csv_number(threshold, f"{where}: __threshold") if threshold else None,
                metadata=metadata or None,
            )
            out.append(tdef)
        if not out and not self.problems and not self.skipped:
            raise InputError(f"{path}: CSV has a header but no test rows")
        return out

    def _expected(self, text: str, where: str) -> CheckDef:
        """promptfoo's check syntax for CSV cells: `type:value`, `type(threshold):value`,
        `grade:` / `llm-rubric:`, `python:` or `file://x.py`, a bare is-json; else equals."""
        raw = text.strip()
        if raw.startswith(("javascript:", "fn:", "eval:")) or (
            raw.startswith("file://") and re.search(r"\.(js|cjs|mjs|ts)(:[\w.]+)?$", raw)
        ):
            _check_type("javascript", where)  # refused, with the hint to use python
        if raw.startswith(("grade:", "llm-rubric:")):
            return CheckDef("llm-rubric", raw.split(":", 1)[1].strip(), None, where)
        if raw.startswith("python:"):
            return CheckDef("python", raw.removeprefix("python:").strip(), None, where)
        if raw.startswith("file://") and re.search(r"\.py(:[\w.]+)?$", raw):
            return CheckDef("python", raw, None, where)
        m = re.fullmatch(
            r"(not-)?([a-z][a-z0-9-]*)(?:\((\d+(?:\.\d+)?)\))?(?::\s*(.*))?", raw, re.S
        )
        if m:
            name, base, number, value = (
                (m.group(1) or "") + m.group(2),
                m.group(2),
                m.group(3),
                m.group(4),
            )
            if name in scoring.ALL_TYPES or base in scoring.PROMPTFOO_ONLY:
                _check_type(name, where)
                value = value if value else None  # `is-json:` with nothing after the colon
                threshold = float(number) if number is not None else None
                if base == "latency" and threshold is None and value is not None:
                    threshold = _csv_number(value, where)
                    value = None
                if base == "similar" and threshold is None:
                    threshold = 0.8  # promptfoo's default for similar in CSV files
                return CheckDef(name, value, threshold, where)
        return CheckDef("equals", raw, None, where)


def _split_prompts(text: str) -> list[str] | None:
    """promptfoo's .txt prompt files: prompts separated by lines that are just `---`.
    None when the file has no such line (it is then one template, read by name)."""
    lines = text.splitlines()
    if not any(line.strip() == "---" for line in lines):
        return None
    chunks: list[str] = []
    buffer: list[str] = []
    for line in [*lines, "---"]:
        if line.strip() == "---":
            chunk = "\n".join(buffer).strip()
            if chunk:
                chunks.append(chunk)
            buffer = []
        else:
            buffer.append(line)
    return chunks


def _csv_number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: expected a number, got {text!r}") from None


def _inline_label(source: str) -> str:
    line = " ".join(source.split())
    return line if len(line) <= 40 else line[:39] + "…"
