"""Render a loaded suite into cells: prompt × test × model, with the exact text each model gets.

All rendering happens here, before any model loads, so a missing variable, a bad regex or a
chat-role mismatch stops the run with exit 2 before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from promptlab import files, scoring
from promptlab.backends import LoadSettings, Sampling, is_fake, json_schema_to_grammar
from promptlab.backends.fake import confine_rules
from promptlab.backends.server import ServerSpec, chat_text
from promptlab.consent import CodeMode, ConsentError
from promptlab.errors import InputError, Problems
from promptlab.models import gguf_info, resolve
from promptlab.models.gguf import GGUFInfo
from promptlab.plan.chat import ChatTemplate
from promptlab.plan.servers import server_endpoint, server_spec
from promptlab.scoring import transforms
from promptlab.suite import (
    CheckDef,
    Constraint,
    LoadedSuite,
    ModelDef,
    ModelSpec,
    PromptDef,
    TestDef,
)
from promptlab.templates import Message, split_roles


@dataclass
class PlannedModel:
    label: str
    spec_path: str
    path: Path | str | ServerSpec  # str for fake:// models, ServerSpec for provider: openai
    gguf: GGUFInfo | None
    chat: ChatTemplate | None
    settings: LoadSettings
    where: str

    @property
    def chat_source(self) -> str:
        if self.chat is None and isinstance(self.path, ServerSpec):
            return f"the server's (endpoint: {self.path.endpoint})"
        return self.chat.source if self.chat else "none (raw completion)"


@dataclass
class Cell:
    id: str
    prompt: PromptDef
    test: TestDef
    model: PlannedModel
    messages: list[Message]
    chat_applied: bool
    text: str  # exactly what is tokenized
    add_bos: bool
    checks: list[scoring.Check]
    threshold: float | None = None  # the test's pass mark on its weighted score
    transform: transforms.Transform | None = None  # the test's transform, before every check
    grammar: Grammar | None = None
    logprobs: int | None = None  # None: not captured; 0: chosen token only; k: top-k too
    generate: bool = True  # False when every check scores the prompt itself (choice)
    endpoint: str | None = None  # server models: "chat" or "completion"
    sampling: Sampling | None = None  # this cell's generation settings (a point of the grid)
    setting: str = ""  # the varied params of this cell, e.g. "temperature=0.7", or ""
    repeat: int = 0  # repeat index; the seed is params.seed + repeat
    order: int = 0  # position in suite order (prompt × test × setting × repeat), for reports


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar for constrained generation, and where it came from."""

    gbnf: str
    source: str  # "response_format json_schema", "grammar file://x.gbnf", ...


@dataclass(frozen=True)
class Selection:
    """Which cells of the suite to run (--filter, --filter-prompt, --filter-test, --limit,
    --sample, --failing / --resume)."""

    pattern: str | None = None  # prompt label, test description or vars
    prompt: str | None = None  # prompt label
    test: str | None = None  # test description or vars
    limit: int | None = None  # the first N tests (after the filters)
    sample: int | None = None  # N tests drawn at random (after the filters)
    sample_seed: int = 0
    cells: frozenset[str] | None = None  # only these cell ids

    def describe(self) -> dict[str, Any]:
        out = {
            k: v
            for k, v in self.__dict__.items()
            if v is not None and k not in ("cells", "sample_seed")
        }
        if self.sample is not None:
            out["sample_seed"] = self.sample_seed
        if self.cells is not None:
            out["cells"] = len(self.cells)
        return out


def _regex(pattern: str | None, flag: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise InputError(
            f"{flag}: invalid regex {pattern!r}: {exc}",
            hint="fix the pattern (a Python regular expression)",
        ) from None


@dataclass
class Plan:
    suite: LoadedSuite
    models: list[PlannedModel]
    cells: list[Cell]
    sampling: Sampling
    total_cells: int  # before --filter/--limit
    # Judge and embedding models named by checks' `provider:`, keyed by that string.
    aux_models: dict[str, PlannedModel] = field(default_factory=dict)
    # Where the suite names user Python (python checks, Python transforms), in suite order.
    code: list[str] = field(default_factory=list)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _plan_model(suite: LoadedSuite, m: ModelDef, seed: int) -> PlannedModel:
    spec = m.spec
    gguf: GGUFInfo | None = None
    path: Path | str | ServerSpec
    if spec.provider == "openai":
        path = server_spec(spec, m.label, m.where)
    elif spec.path is None:  # the schema requires it for local models
        raise InputError(f"{m.where}: missing required key; add path:")
    elif is_fake(spec.path):
        path = confine_rules(spec.path, suite.path.parent, suite.root, m.where)
    else:
        path = resolve(spec.path, suite.path.parent, m.where)
        gguf = gguf_info(path)
    chat: ChatTemplate | None = None
    bos = (gguf.token("bos") if gguf else None) or ""
    eos = (gguf.token("eos") if gguf else None) or ""
    if spec.chat is not False:
        if spec.chat_template is not None:
            if spec.chat_template.startswith("file://"):
                (tpath,) = files.resolve_ref(
                    spec.chat_template,
                    base=suite.path.parent,
                    root=suite.root,
                    what="chat template",
                    where=f"{m.where}.chat_template",
                    globs=False,
                )
                chat = ChatTemplate(
                    f"file:{spec.chat_template.removeprefix('file://')}",
                    files.read_text(tpath, "chat template"),
                    bos,
                    eos,
                )
            else:
                chat = ChatTemplate("inline", spec.chat_template, bos, eos)
        elif gguf is not None and gguf.chat_template:
            chat = ChatTemplate("gguf:tokenizer.chat_template", gguf.chat_template, bos, eos)
        elif spec.chat is True:
            raise InputError(
                f"{m.where}: chat: true but model '{m.label}' has no chat template",
                hint="set chat_template: file://template.jinja, or chat: auto/false",
            )
    if chat is not None:
        chat.compile(m.where)
    threads = usable_cpus()
    settings = LoadSettings(
        n_gpu_layers=spec.n_gpu_layers,
        n_ctx=spec.n_ctx,
        n_batch=spec.n_batch,
        n_threads=spec.n_threads or threads,
        n_threads_batch=spec.n_threads_batch or spec.n_threads or threads,
        flash_attn=spec.flash_attn,
        seed=seed,
        prefix_chunk=spec.prefix_chunk,
        parallel=None if spec.parallel == "auto" else spec.parallel,
    )
    if isinstance(path, ServerSpec):
        # The server owns threads, context and offload: neutral values, so nothing here (the
        # busy-CPU note, tune) mistakes it for a local model.
        settings = replace(settings, n_gpu_layers=0, n_threads=1, n_threads_batch=1, parallel=1)
    if gguf is not None and gguf.n_ctx_train and spec.n_ctx > gguf.n_ctx_train:
        suite.notes.append(
            f"{m.where}: n_ctx {spec.n_ctx} exceeds the model's training context {gguf.n_ctx_train}; quality may drop past it"
        )
    return PlannedModel(m.label, spec.path or str(path), path, gguf, chat, settings, m.where)


def _cell_id(
    prompt: PromptDef, test: TestDef, model: PlannedModel, setting: str = "", repeat: int = 0
) -> str:
    # Identity of a cell across runs: which prompt, test, model, grid point and repeat; not the
    # content, so a changed template shows up as a changed output of the same cell.
    key = json.dumps(
        [prompt.label, test.index, test.description, test.vars, model.label, setting, repeat],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _sampling(p: Any, repeat: int) -> Sampling:
    return Sampling(
        p.temperature,
        p.top_p,
        p.top_k,
        p.min_p,
        p.max_tokens,
        tuple(p.stop),
        p.seed + repeat,
        p.repeat_penalty,
    )


def _setting_label(p: Any, varied: list[str]) -> str:
    return ", ".join(f"{k}={json.dumps(getattr(p, k), ensure_ascii=False)}" for k in varied)


def schedule(cells: list[Cell]) -> list[Cell]:
    """Run order: each model once, and within a model, cells sharing a token prefix back to back.

    Sorting by the exact text puts every cell right after the one it shares the longest prefix
    with, so llama.cpp's single-slot KV reuse serves each shared system prompt or few-shot block
    once per group instead of once per cell. (Explicit state save/restore would only help
    groups that sorting cannot make adjacent; there are none once the order is free.)
    """
    model_rank = {id(c.model): i for i, c in reversed(list(enumerate(cells)))}
    return sorted(
        cells,
        key=lambda c: (
            model_rank[id(c.model)],
            c.text,
            c.grammar.gbnf if c.grammar else "",
            c.setting,
            c.repeat,
        ),
    )


def _render_value(suite: LoadedSuite, value: Any, variables: dict[str, Any], where: str) -> Any:
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return suite.env.render(suite.env.from_string(value, where), variables, where)
    if isinstance(value, list):
        return [_render_value(suite, v, variables, where) for v in value]
    return value


def _render_messages(
    suite: LoadedSuite, prompt: PromptDef, test: TestDef
) -> tuple[list[Message], bool]:
    where = f"{test.where} ({test.name}) × prompt '{prompt.label}'"
    try:
        if prompt.kind == "messages":
            msgs = [
                Message(role or "user", suite.env.render(tpl, test.vars, where).strip())
                for role, tpl in prompt.parts
            ]
            return msgs, True
        text = suite.env.render(prompt.parts[0][1], test.vars, where)
    except InputError:
        if test.csv_columns is not None:
            missing = sorted(prompt.variables - set(test.vars))
            if missing:
                cols = ", ".join(repr(v) for v in missing)
                raise InputError(
                    f"{test.where}: the CSV's columns don't provide {cols}, used by prompt "
                    f"'{prompt.label}' ({prompt.source})",
                    hint=f"add a column named {missing[0]} (or set it in vars:)",
                ) from None
        raise
    return split_roles(text, f"{prompt.where} (rendered for {test.name})")


def _grammar(constraint: Constraint | None, where: str, base: Path, root: Path) -> Grammar | None:
    if constraint is None:
        return None
    if constraint.grammar is not None:
        text = constraint.grammar
        if text.startswith("file://"):
            (path,) = files.resolve_ref(
                text, base=base, root=root, what="grammar file", where=where, globs=False
            )
            return Grammar(files.read_text(path, "grammar file"), f"grammar {text}")
        return Grammar(text, "grammar (inline GBNF)")
    rf = constraint.response_format
    if rf is None:
        return None
    kind = rf.get("type")
    if kind == "json_schema":
        nested = rf.get("json_schema")
        schema = rf.get("schema", nested.get("schema") if isinstance(nested, dict) else None)
        if not isinstance(schema, dict):
            raise InputError(
                f"{where}: response_format json_schema needs schema: {{...}}",
                hint="response_format: {type: json_schema, schema: {type: object, ...}}",
            )
    elif kind == "json_object":
        given = rf.get("schema")
        schema = given if isinstance(given, dict) else {}
    else:
        raise InputError(
            f"{where}: response_format type must be json_schema or json_object, got {kind!r}",
            hint="or give a GBNF grammar: instead",
        )
    return Grammar(json_schema_to_grammar(schema, where), f"response_format {kind}")


def _prepare_checks(
    suite: LoadedSuite, test: TestDef, defs: list[CheckDef], env: scoring.PrepareEnv
) -> list[scoring.Check]:
    out = []
    for c in defs:
        extra = dict(c.extra)
        children = _prepare_checks(suite, test, c.children, env)
        value = _render_value(suite, c.value, test.vars, c.where)
        options: dict[str, Any] = {
            key: extra.pop(key)
            for key in ("provider", "rubricPrompt", "config", "choices", "method")
            if key in extra
        }
        for key in ("provider", "rubricPrompt"):
            if key not in options and key in test.options:
                options[key] = test.options[key]
        if isinstance(options.get("choices"), list) or (
            isinstance(options.get("choices"), str) and "{{" in options["choices"]
        ):
            options["choices"] = _render_value(suite, options["choices"], test.vars, c.where)
        out.append(
            scoring.prepare(
                c.type,
                value,
                c.threshold,
                c.where,
                weight=extra.get("weight", 1.0),
                metric=extra.get("metric"),
                transform=extra.get("transform"),
                children=children,
                options=options,
                env=env,
            )
        )
    return out


def _providers(checks: list[scoring.Check]) -> dict[str, str]:
    """provider string → where it was named, for judge and embedding checks."""
    out: dict[str, str] = {}
    for check in checks:
        for c in check.walk():
            needs_model = c.base in scoring.JUDGE_TYPES or c.options.get("method") == "embedding"
            provider = c.options.get("provider")
            if needs_model and isinstance(provider, str):
                out.setdefault(provider, c.where)
    return out


def build_plan(
    suite: LoadedSuite,
    *,
    filter_pattern: str | None = None,
    limit: int | None = None,
    code: CodeMode = CodeMode.CHECK,
    selection: Selection | None = None,
) -> Plan:
    """Every cell of the suite, rendered and with its checks prepared. `code` says what may
    happen to user Python (CHECK: parse only, for validate and render)."""
    sel = selection or Selection(pattern=filter_pattern, limit=limit)
    p = suite.params
    sampling = _sampling(p, 0)
    settings = suite.settings or [p]
    models = [_plan_model(suite, m, p.seed) for m in suite.models]
    matcher = _regex(sel.pattern, "--filter")
    prompt_rx = _regex(sel.prompt, "--filter-prompt")
    test_rx = _regex(sel.test, "--filter-test")
    for flag, n in (("--limit", sel.limit), ("--sample", sel.sample)):
        if n is not None and n < 1:
            raise InputError(f"{flag} must be at least 1, got {n}")

    cells: list[Cell] = []
    total = 0
    kept_tests: list[int] = []
    sampled: set[int] | None = None
    rendered: dict[tuple[int, int], tuple[list[Message], bool] | None] = {}
    checks: dict[int, list[scoring.Check]] = {}
    test_transforms: dict[int, transforms.Transform | None] = {}
    aux: dict[str, PlannedModel] = {}
    code_used: list[str] = []
    # Every problem found while planning is reported at once, like the loader's (one line each).
    problems: dict[str, InputError] = {}

    def found(exc: InputError) -> None:
        if isinstance(exc, ConsentError):
            # Not a problem of the suite but a decision for the person: one line, at once.
            raise exc
        problems.setdefault(exc.one_line(), exc)

    for test in suite.tests:
        env = scoring.PrepareEnv(
            base=suite.path.parent,
            root=suite.root,
            code=code,
            code_used=code_used,
            templates=suite.env,
            variables=test.vars,
        )
        try:
            checks[test.index] = _prepare_checks(suite, test, test.checks, env)
        except InputError as exc:
            found(exc)
            checks[test.index] = []
        try:
            test_transforms[test.index] = transforms.parse(
                test.transform,
                where=test.where,
                base=suite.path.parent,
                root=suite.root,
                code=code,
                code_used=code_used,
            )
        except InputError as exc:
            found(exc)
            test_transforms[test.index] = None
        for provider, where in _providers(checks[test.index]).items():
            if provider not in aux:
                aux[provider] = _plan_model(
                    suite,
                    ModelDef(_provider_label(provider), ModelSpec(path=provider), where),
                    p.seed,
                )
    grammars: dict[int, Any] = {}
    for pi, prompt in enumerate(suite.prompts):
        try:
            grammars[pi] = _grammar(
                prompt.config, prompt.where, suite.path.parent, suite.root
            ) or _grammar(p, f"{suite.path}: params", suite.path.parent, suite.root)
        except InputError as exc:
            found(exc)
            grammars[pi] = None
    if sel.sample is not None:
        import random  # noqa: PLC0415

        def matches(t: TestDef) -> bool:
            test_hay = " ".join([t.name, *(str(v) for v in t.vars.values())])
            return test_rx is None or test_rx.search(test_hay) is not None

        eligible = [t.index for t in suite.tests if matches(t)]
        sampled = set(
            random.Random(sel.sample_seed).sample(eligible, min(sel.sample, len(eligible)))
        )
    order = 0
    for model, mdef in zip(models, suite.models, strict=True):
        # A promptfoo provider's config sets its own model's settings (suite/providers.py).
        model_settings = [s.model_copy(update=mdef.params) for s in settings]
        model_p = p.model_copy(update=mdef.params)
        for test in suite.tests:
            test_hay = " ".join([test.name, *(str(v) for v in test.vars.values())])
            test_checks = checks[test.index]
            leaves = [c for check in test_checks for c in check.walk() if not c.children]
            needs_logprobs = any(c.base in scoring.NEEDS_LOGPROBS for c in leaves)
            generate = not leaves or any(c.base not in scoring.NO_OUTPUT for c in leaves)
            # A choice-only cell does not sample: one cell per test, whatever the grid.
            points = (
                [(s, r) for s in model_settings for r in range(suite.repeat)]
                if generate
                else [(model_p, 0)]
            )
            for pi, prompt in enumerate(suite.prompts):
                total += len(points)
                if (pi, test.index) not in rendered:
                    try:
                        rendered[(pi, test.index)] = _render_messages(suite, prompt, test)
                    except InputError as exc:
                        found(exc)
                        rendered[(pi, test.index)] = None
                done = rendered[(pi, test.index)]
                if done is None:
                    continue
                messages, had_roles = done
                if matcher is not None and not matcher.search(f"{prompt.label} {test_hay}"):
                    continue
                if prompt_rx is not None and not prompt_rx.search(prompt.label):
                    continue
                if test_rx is not None and not test_rx.search(test_hay):
                    continue
                if sampled is not None and test.index not in sampled:
                    continue
                if sel.limit is not None and test.index not in kept_tests:
                    if len(kept_tests) >= sel.limit:
                        continue
                    kept_tests.append(test.index)
                where = f"prompt '{prompt.label}' × model '{model.label}'"
                endpoint = None
                if isinstance(model.path, ServerSpec):
                    try:
                        endpoint = server_endpoint(
                            model.path, model.chat is not None, had_roles, prompt, leaves
                        )
                    except InputError as exc:
                        found(exc)
                        continue
                if endpoint == "chat":
                    text = chat_text([(msg.role, msg.content) for msg in messages])
                    chat_applied, add_bos = True, False  # applied by the server
                elif model.chat is not None:
                    text = model.chat.apply(messages, where)
                    chat_applied, add_bos = True, False  # the template writes BOS itself
                else:
                    if had_roles:
                        found(
                            InputError(
                                f"{prompt.where}: prompt '{prompt.label}' has chat roles but "
                                f"model '{model.label}' has no chat template (a base model, or "
                                "chat: false)",
                                hint="use a plain-text prompt for it, or set chat_template: on "
                                "the model",
                            )
                        )
                        continue
                    text = messages[0].content
                    chat_applied, add_bos = False, True  # llama.cpp adds BOS iff the GGUF says so
                for setting_params, repeat in points:
                    setting = _setting_label(setting_params, suite.varied) if generate else ""
                    cell_id = _cell_id(prompt, test, model, setting, repeat)
                    order += 1
                    if sel.cells is not None and cell_id not in sel.cells:
                        continue
                    cells.append(
                        Cell(
                            cell_id,
                            prompt,
                            test,
                            model,
                            messages,
                            chat_applied,
                            text,
                            add_bos,
                            test_checks,
                            threshold=test.threshold,
                            transform=test_transforms[test.index],
                            grammar=grammars[pi],
                            logprobs=setting_params.logprobs
                            if setting_params.logprobs is not None
                            else (0 if needs_logprobs else None),
                            generate=generate,
                            sampling=_sampling(setting_params, repeat),
                            setting=setting,
                            repeat=repeat,
                            order=order,
                            endpoint=endpoint,
                        )
                    )
    if problems:
        every = list(problems.values())
        raise every[0] if len(every) == 1 else Problems(every, suite.path.name)
    return Plan(suite, models, cells, sampling, total, aux, list(dict.fromkeys(code_used)))


def _provider_label(spec: str) -> str:
    return spec if "/" not in spec and not spec.endswith(".gguf") else Path(spec).stem
