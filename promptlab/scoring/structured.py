"""JSON checks: is-json, contains-json and json-schema, each with an optional schema."""

from __future__ import annotations

import json
import re
from typing import Any

from promptlab import files
from promptlab.errors import InputError
from promptlab.scoring.checks import Check, CheckContext, PrepareEnv, Verdict, _bool


def _load_schema(value: Any, where: str, env: PrepareEnv) -> Any:
    if isinstance(value, str) and value.startswith("file://"):
        (path,) = files.resolve_ref(
            value, base=env.base, root=env.root, what="schema file", where=where, globs=False
        )
        try:
            value = json.loads(files.read_text(path, "schema file"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: invalid JSON schema file: {exc.msg}") from None
    return value


def _prep_json(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], env: PrepareEnv
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    value = _load_schema(value, where, env)
    if base == "json-schema" and value is None:
        raise InputError(
            f"{where}: 'json-schema' needs a schema as value",
            hint="value: {type: object, ...} or file://schema.json",
        )
    if value is not None and not isinstance(value, dict):
        raise InputError(
            f"{where}: '{base}' takes an optional JSON schema object as value",
            hint="remove value, or give a schema mapping",
        )
    if value is not None:
        schema_validator(value, where)
    return value, threshold


def schema_validator(schema: dict[str, Any], where: str) -> Any:
    import jsonschema  # noqa: PLC0415 - only suites with schemas pay for the import

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InputError(f"{where}: invalid JSON schema: {exc.message}") from None
    return cls(schema)


def _validate_json(check: Check, data: Any, what: str) -> Verdict:
    if check.value is None:
        return _bool(True, f"{what} is valid JSON")
    validator = schema_validator(check.value, check.where)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return _bool(True, f"{what} is valid JSON matching the schema")
    err = errors[0]
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return _bool(False, f"schema violation at {path}: {err.message}")


def _is_json(check: Check, ctx: CheckContext) -> Verdict:
    try:
        data = json.loads(ctx.output)
    except json.JSONDecodeError as exc:
        return _bool(False, f"output is not valid JSON ({exc.msg} at char {exc.pos})")
    return _validate_json(check, data, "output")


def _contains_json(check: Check, ctx: CheckContext) -> Verdict:
    decoder = json.JSONDecoder()
    text = ctx.output
    last: Verdict | None = None
    for match in re.finditer(r"[\[{]", text):
        try:
            data, _end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        last = _validate_json(check, data, "embedded JSON")
        if last[0]:
            return last
    return last or _bool(False, "output contains no JSON object or array")
