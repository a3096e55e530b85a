"""Read an eval suite: YAML → pydantic models (extra="forbid") → loaded prompts, tests and models.

Everything is checked here, before any model loads; each error names file, line and field, and
every problem is found in one pass (raised together at the end).
"""

from __future__ import annotations

import difflib
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from promptlab import files
from promptlab.errors import SKIP_HINT, InputError, Problems, Unsupported, location
from promptlab.files import read_text
from promptlab.models import DEFAULT_MODEL
from promptlab.models import sources as model_sources
from promptlab.suite import providers as pf_providers
from promptlab.suite.loaded import (
    CheckDef,
    LoadedOptimize,
    LoadedSuite,
    ModelDef,
    PromptDef,
    TestDef,
)
from promptlab.suite.optimize_schema import OptimizeSpec
from promptlab.suite.problems import validation_error
from promptlab.suite.promptfoo import (
    _checked_transform,
    _first,
    _flags,
    _ignored_top_notes,
    _resolve_refs,
)
from promptlab.suite.schema import GRIDABLE, ModelSpec, Params, Suite
from promptlab.suite.sources import Sources
from promptlab.templates import sha256_text
from promptlab.yamlio import YamlDoc, dotted, load_yaml


class _Loader(Sources):
    def __init__(self, path: Path, skip_unsupported: bool = False) -> None:
        super().__init__(path, skip_unsupported)
        # key (providers, targets) -> what each of its providers became, for the note
        self.translated: dict[str, list[pf_providers.Translated]] = {}

    def tests(self, suite: Suite, doc: YamlDoc) -> list[TestDef]:
        skipped_before = len(self.skipped)
        vars_where = self.where(doc.line_of(("vars",)), "vars")
        base_vars = self.attempt(
            "every test", vars_where, partial(self.vars, suite.vars, "vars", doc)
        )
        default_checks: list[CheckDef] = []
        default = suite.defaultTest
        default_where = self.where(doc.line_of(("defaultTest",)), "defaultTest")
        default_options: dict[str, Any] = {}
        default_transform: Any = None
        if default is not None:
            default_vars = self.attempt(
                "every test",
                default_where,
                partial(self.vars, default.vars, "defaultTest.vars", doc),
            )
            base_vars = {**(base_vars or {}), **(default_vars or {})}
            for j, a in enumerate(default.assert_):
                at = self.where(
                    doc.line_of(("defaultTest", "assert", j)), f"defaultTest.assert[{j}]"
                )
                check = self.attempt("check", at, partial(self.check, a, at))
                if check is not None:
                    default_checks.append(check)
            default_options = self.options(default, default_where)
            default_transform = self.attempt(
                "every test", default_where, partial(_checked_transform, default, default_where)
            )
        if len(self.skipped) > skipped_before and self.skipped[-1]["what"] == "every test":
            self.drop_all_tests = True
        entries: list[tuple[Any, tuple[int | str, ...]]]
        if isinstance(suite.tests, str):
            entries = [(suite.tests, ("tests",))]
        else:
            entries = [(t, ("tests", i)) for i, t in enumerate(suite.tests)]
        raw: list[TestDef] = []
        for entry, loc in entries:
            line = doc.line_of(loc)
            where = self.where(line, dotted(loc))
            if isinstance(entry, str):
                if not entry.startswith("file://"):
                    self.problems.append(
                        InputError(
                            f"{where}: a test entry that is text must be file://path",
                            hint="or write a mapping with vars: and assert: (promptlab reads "
                            "local .csv, .jsonl, .yaml and .json files)",
                        )
                    )
                    continue
                paths = self.attempt(
                    "tests of the file", where, partial(self.file_ref, entry, where, "test file")
                )
                for path in paths or []:
                    raw += (
                        self.attempt("tests of the file", where, partial(self.tests_file, path))
                        or []
                    )
            elif isinstance(entry, dict):
                test = self.attempt("test", where, partial(self.test_entry, entry, loc, where, doc))
                if test is not None:
                    raw.append(test)
            else:
                self.problems.append(
                    InputError(f"{where}: a test must be a mapping or file://path")
                )
        if self.drop_all_tests:
            return []
        if not raw and not isinstance(suite.tests, str) and not suite.tests:
            # promptfoo runs each prompt once when there are no tests.
            raw.append(TestDef(0, None, {}, [], self.where(doc.line_of(()), None)))
        defaults = TestDef(0, None, {}, [], default_where)
        if default is not None:
            _flags(defaults, default)
        out: list[TestDef] = []
        for t in raw:
            t.vars = {**(base_vars or {}), **t.vars}
            default_asserts = _first(t.default_asserts, defaults.default_asserts, True)
            t.checks = (default_checks if default_asserts else []) + t.checks
            t.options = {**default_options, **t.options}
            t.expand_vars = _first(t.expand_vars, defaults.expand_vars, True)
            if default is not None:
                t.threshold = t.threshold if t.threshold is not None else default.threshold
                t.transform = t.transform if t.transform is not None else default_transform
                if default.metadata:
                    t.metadata = {**default.metadata, **(t.metadata or {})}
            out += self.expand(t)
        for i, t in enumerate(out):
            t.index = i
        self.code_files(out)
        return out

    def optimize(self, spec: OptimizeSpec, doc: YamlDoc) -> LoadedOptimize:
        """Read the files the optimize: section names, through the same confinement."""
        loaded = LoadedOptimize(spec, doc)
        if spec.demos is not None and spec.demos.pool.startswith("file://"):
            where = self.where(doc.line_of(("optimize", "demos", "pool")), "optimize.demos.pool")
            loaded.pool = []
            for path in self.file_ref(spec.demos.pool, where, "demo pool file"):
                loaded.pool += self.tests_file(path)
        meta = spec.instructions.meta_prompt if spec.instructions is not None else None
        if meta is not None:
            loc = ("optimize", "instructions", "meta_prompt")
            where = self.where(doc.line_of(loc), dotted(loc))
            if meta.startswith("file://"):
                (path,) = files.resolve_ref(
                    meta,
                    base=self.base,
                    root=self.root,
                    what="meta prompt",
                    where=where,
                    globs=False,
                )
                self.record(path, read_text(path, "meta prompt"))
                loaded.meta_prompt = self.env.load_file(path, where)
            else:
                loaded.meta_prompt = self.env.from_string(meta, where)
        return loaded

    def models(self, suite: Suite, doc: YamlDoc) -> list[ModelDef]:
        out: list[ModelDef] = []
        if suite.models:
            for i, spec in enumerate(suite.models):
                where = self.where(doc.line_of(("models", i)), f"models[{i}]")
                out.append(ModelDef(spec.label or _model_label(spec), spec, where))
        else:
            out = self.provider_models(suite, doc) or [self.default_model()]
        labels = [m.label for m in out]
        for lab in labels:
            if labels.count(lab) > 1:
                raise InputError(
                    f"{self.path}: two models are labelled '{lab}'",
                    hint="give each a distinct label:",
                )
        return out

    def provider_models(self, suite: Suite, doc: YamlDoc) -> list[ModelDef]:
        """The models promptfoo's providers run as (suite/providers.py), plus the default model
        in place of those that cannot run here; [] when none of them runs here."""
        out: list[ModelDef] = []
        for key in ("providers", "targets"):
            at = self.where(doc.line_of((key,)), key)
            found = self.attempt(
                "models",
                at,
                partial(pf_providers.entries, getattr(suite, key), key, doc, self.path),
            )
            self.translated[key] = []
            for p in found or []:
                where = self.where(doc.line_of(p.loc), dotted(p.loc))
                t = self.attempt(
                    "models", where, partial(pf_providers.translate, p, doc, self.path)
                )
                if t is None:
                    continue
                self.translated[key].append(t)
                if t.spec is None:
                    continue
                for name, why in pf_providers.ignored_entry_keys(p):
                    self.ignore(where, f"a provider's {name}", why)
                if t.ignored:
                    cfg = (*p.loc, "config")
                    self.notes.append(
                        f"{self.where(doc.line_of(cfg), dotted(cfg))}: {', '.join(t.ignored)} "
                        f"{'is' if len(t.ignored) == 1 else 'are'} ignored (promptlab has no "
                        "equivalent setting)"
                    )
                params = t.params
                overridden = [k for k in params if k in suite.params]
                if overridden:
                    params = {k: v for k, v in params.items() if k not in overridden}
                    self.notes.append(
                        f"{where}: {p.ident}'s {', '.join(overridden)} from config: give way to "
                        "params:, which sets them for every model"
                    )
                out.append(ModelDef(t.spec.label or _model_label(t.spec), t.spec, where, params))
        every = [t for ts in self.translated.values() for t in ts]
        if out and any(t.kind == "replaced" for t in every):
            out.append(self.default_model())
        return out

    def default_model(self) -> ModelDef:
        spec = ModelSpec(path=DEFAULT_MODEL)
        return ModelDef(_model_label(spec), spec, self.where(None, "models (default)"))


def load_suite(
    path: Path, model_override: str | None = None, *, skip_unsupported: bool = False
) -> LoadedSuite:
    """Read and check a suite file. Raises InputError with file:line on a problem, or Problems
    holding every problem found. With `skip_unsupported`, what uses a promptfoo feature that
    promptlab does not run is left out instead (named in the notes and in `skipped`)."""
    text = read_text(path, "suite file")
    if not text.strip():
        raise InputError(
            f"{path}: suite file is empty",
            hint="start from `promptlab init` or add prompts: and tests:",
        )
    doc = load_yaml(path, text, what="suite file")
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        raise InputError(
            f"{location(path, 1)}: the top level must be a mapping (got {kind})",
            hint="write keys such as prompts:, tests:, models:",
        )
    loader = _Loader(path, skip_unsupported)
    loader.record(path, text)
    data = _resolve_refs(doc.data, doc, path)
    notes: list[str] = []
    data = _stray_keys(data, doc, path, notes)
    data = loader.attempt(
        "defaultTest",
        loader.where(doc.line_of(("defaultTest",)), "defaultTest"),
        partial(_default_test_file, data, doc, loader),
    ) or {k: v for k, v in data.items() if k != "defaultTest"}
    suite = loader.validate(Suite, data, doc, what="suite")
    if suite is None:
        raise _collected(loader.problems, path)
    repeat = suite.repeat
    pf_repeat = (suite.evaluateOptions or {}).get("repeat")
    if pf_repeat is not None:  # promptfoo's spelling of the same thing
        if not isinstance(pf_repeat, int) or isinstance(pf_repeat, bool) or pf_repeat < 1:
            loader.problems.append(
                InputError(
                    f"{location(path, doc.line_of(('evaluateOptions', 'repeat')))}: "
                    f"evaluateOptions.repeat must be a whole number >= 1, got {pf_repeat!r}"
                )
            )
        else:
            repeat = max(repeat, pf_repeat)
    grid = loader.attempt(
        "params",
        loader.where(doc.line_of(("params",)), "params"),
        partial(_settings, suite.params, doc, path),
    )
    settings, varied = grid if grid is not None else ([Params()], [])
    if suite.allow_code is not None:
        notes.append(
            f"{location(path, doc.line_of(('allow_code',)))}: allow_code: is ignored; a suite "
            "cannot give itself consent to run code (python checks need --allow-code, "
            "PROMPTLAB_ALLOW_CODE=1 or `promptlab trust` from the person running it)"
        )
    notes += _ignored_top_notes(suite, doc, path, repeat)
    prompts: list[PromptDef] = []
    for i, spec in enumerate(suite.prompts):
        where = loader.where(doc.line_of(("prompts", i)), f"prompts[{i}]")
        prompts += loader.attempt("prompt", where, partial(loader.prompt, i, spec, doc)) or []
    labels = [p.label for p in prompts]
    for p in prompts:
        if labels.count(p.label) > 1:
            loader.problems.append(
                InputError(
                    f"{p.where}: two prompts are labelled '{p.label}'",
                    hint="give each a distinct label:",
                )
            )
    tests = loader.tests(suite, doc)
    models = (
        loader.attempt("models", loader.where(None, "models"), partial(loader.models, suite, doc))
        or []
    )
    optimize = (
        loader.attempt(
            "optimize",
            loader.where(doc.line_of(("optimize",)), "optimize"),
            partial(loader.optimize, suite.optimize, doc),
        )
        if suite.optimize is not None
        else None
    )
    if model_override:
        chosen = [m for m in models if m.label == model_override]
        models = chosen or [
            ModelDef(_override_label(model_override), ModelSpec(path=model_override), "--model")
        ]
    for key in ("providers", "targets"):
        if getattr(suite, key) is not None:
            where = location(path, doc.line_of((key,)))
            notes.insert(0, _providers_note(where, key, loader, models, model_override))
    for m in models:
        longest = max(m.params.get("max_tokens", p.max_tokens) for p in settings)
        if longest >= m.spec.n_ctx:
            loader.problems.append(
                InputError(
                    f"{location(path, doc.line_of(('params', 'max_tokens')))}: params.max_tokens "
                    f"({longest}) must be smaller than n_ctx ({m.spec.n_ctx}) of "
                    f"model '{m.label}'",
                    hint="lower max_tokens or raise n_ctx",
                )
            )
    if loader.problems:
        raise _collected(loader.problems, path)
    if loader.skipped and not (prompts and (tests or not suite.tests)):
        raise InputError(
            f"{path}: --skip-unsupported left nothing to run (every "
            f"{'prompt' if not prompts else 'test'} uses an unsupported feature)",
            hint="see the notes for what was left out",
        )
    for item in loader.skipped:
        notes.append(
            f"{item['where']}: {item['what']} left out (--skip-unsupported): {item['why']}"
        )
    return LoadedSuite(
        path=path,
        root=loader.root,
        sha256=sha256_text(text),
        description=suite.description,
        prompts=prompts,
        tests=tests,
        models=models,
        params=settings[0],
        settings=settings,
        varied=varied,
        repeat=repeat,
        env=loader.env,
        notes=notes + loader.notes + loader.ignored_notes(),
        files=loader.files,
        claims_code=suite.allow_code is not None,
        skipped=loader.skipped,
        optimize=optimize,
    )


def _providers_note(
    where: str, key: str, loader: _Loader, models: list[ModelDef], override: str | None
) -> str:
    """What became of promptfoo's `providers:` (or `targets:`): what each runs as when they
    chose the models, else that they are ignored for the models that run."""
    translated = loader.translated.get(key)
    if translated and not override and any(t.kind != "replaced" for t in translated):
        default = next((m.label for m in models if m.spec.path == DEFAULT_MODEL), None)
        return pf_providers.note(where, key, translated, default)
    names = ", ".join(m.label for m in models)
    noun = "model" if len(models) == 1 else "models"
    text = f"{where}: {key}: is ignored; running the local {noun} {names} instead (--model picks another)"
    if translated and not override:  # every one replaced: say why for those that look local
        text += "".join(f"; {t.provider.ident}: {t.why}" for t in translated if t.why)
    return text


def _collected(problems: list[InputError], path: Path) -> InputError:
    """The error for what load_suite found: the problem itself when there is one (as it always
    read), else Problems with each on its own line. Unsupported features point at
    --skip-unsupported."""
    unique = list({p.one_line(): p for p in problems}.values())
    if not unique:
        return InputError(f"{path}: the suite could not be read", hint="run promptlab validate")
    if len(unique) > 1:
        return Problems(unique, path.name)
    problem = unique[0]
    if isinstance(problem, Unsupported):
        hint = f"{problem.hint}; {SKIP_HINT}" if problem.hint else SKIP_HINT
        return Unsupported(problem.message, hint=hint)
    return problem


# Close enough to a known key to be its typo (modles, promtps, test, parms): an error that says
# which key was meant. Anything further away is a stray key, which promptfoo also ignores.
_TYPO_CUTOFF = 0.75


def _stray_keys(data: dict[str, Any], doc: YamlDoc, path: Path, notes: list[str]) -> dict[str, Any]:
    """promptfoo warns about top-level keys it does not know and runs; so does promptlab, with a
    note, for a key that is nobody's (`outputs:`). A near-miss of a known key stays an error
    ("did you mean"), and so does a generation or model setting written at the top level, since
    ignoring those would change the results."""
    known = sorted(
        {f.alias or n for n, f in Suite.model_fields.items()} | set(Suite.promptfoo_refused)
    )
    out = {}
    for key, value in data.items():
        name = str(key)
        if key in known or difflib.get_close_matches(name, known, n=1, cutoff=_TYPO_CUTOFF):
            out[key] = value  # validated (and a typo reported) with the rest
            continue
        at = location(path, doc.line_of((key,)))
        if name in Params.model_fields or name in ModelSpec.model_fields:
            under = "params" if name in Params.model_fields else "models"
            raise InputError(
                f"{at}: top level: unknown key '{name}'; it belongs under {under}:",
                hint=f"move it: {under}: {{{name}: ...}}"
                if under == "params"
                else f"move it into each model: models: [{{path: ..., {name}: ...}}]",
            )
        notes.append(
            f"{at}: unknown top-level key '{name}' is ignored, as promptfoo ignores it "
            "(it changes nothing here; remove it to silence this note)"
        )
    return out


def expand_params(raw: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """`params:` with lists → every combination (a grid), and the keys that vary.

    `stop` is already a list: a list of strings is one setting, a list of lists a grid.
    """
    axes: list[tuple[str, list[Any]]] = []
    for key in GRIDABLE:
        if key not in raw:
            continue
        value = raw[key]
        if key == "stop":
            is_grid = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
        else:
            is_grid = isinstance(value, list)
        if is_grid:
            axes.append((key, list(value)))
    fixed = {k: v for k, v in raw.items() if k not in dict(axes)}
    combos = [dict(fixed)]
    for key, values in axes:
        combos = [{**c, key: v} for c in combos for v in values]
    return combos, [key for key, values in axes if len(values) > 1]


def _settings(raw: dict[str, Any], doc: YamlDoc, path: Path) -> tuple[list[Params], list[str]]:
    for key, value in raw.items():
        if key in GRIDABLE and isinstance(value, list) and not value:
            raise InputError(
                f"{location(path, doc.line_of(('params', key)))}: params.{key} is an empty list",
                hint="give one value, or a list of values to compare",
            )
    try:
        # Each combination is validated as a whole Params, which suggests the closest valid key.
        combos, varied = expand_params(raw)
        settings = [Params.model_validate(c) for c in combos]
    except ValidationError as exc:
        raise validation_error(exc, doc, path, ("params",)) from None
    if len(settings) > 10_000:
        raise InputError(
            f"{location(path, doc.line_of(('params',)))}: params makes a grid of {len(settings)} settings",
            hint="use fewer values per setting",
        )
    return settings, varied


def _default_test_file(data: dict[str, Any], doc: YamlDoc, loader: _Loader) -> dict[str, Any]:
    """promptfoo's `defaultTest: file://defaults.yaml`."""
    ref = data.get("defaultTest")
    if not isinstance(ref, str):
        return data
    where = loader.where(doc.line_of(("defaultTest",)), "defaultTest")
    if not ref.startswith("file://"):
        raise InputError(f"{where}: text here must be file://defaults.yaml", hint="or a mapping")
    paths = loader.file_ref(ref, where, "defaultTest file")
    value = loader.read_value(paths[0], "defaultTest file")
    if not isinstance(value, dict):
        raise InputError(f"{paths[0]}: a defaultTest file must hold a mapping (vars:, assert:, …)")
    return {**data, "defaultTest": value}


def _model_label(spec: ModelSpec) -> str:
    if spec.path is None:  # a server model: its name on the server
        return spec.model or "server"
    return _override_label(spec.path)


def _override_label(spec: str) -> str:
    named = model_sources.default_label(spec)  # ollama:NAME, hf://OWNER/REPO/...
    if named is not None:
        return named
    return spec if "/" not in spec and not spec.endswith(".gguf") else Path(spec).stem
