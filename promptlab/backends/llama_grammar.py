"""JSON schema → GBNF, through llama-cpp-python's own converter (pure Python, no model needed).

We call `llama_cpp.llama_grammar.json_schema_to_gbnf` directly rather than going through
`response_format` / `LlamaGrammar.from_json_schema` in the chat path, because llama-cpp-python's
`_grammar_for_json_schema` catches any conversion error and silently substitutes a generic-JSON
grammar: the run would then "pass" with output that never followed the schema. Here every failure
is an InputError naming the suite location.

What the converter does NOT enforce (it ignores these keywords, the grammar is then looser than
the schema; validate the parsed output against the schema to catch them): numeric bounds
(minimum, maximum, exclusive*, multipleOf), not, if/then/else, uniqueItems, contains,
patternProperties, minProperties/maxProperties, propertyNames, unknown `format` values. It is also
stricter than JSON Schema in one way: an object with `properties` and no `additionalProperties`
gets no extra keys. `pattern` must be anchored (`^…$`). Only local `$ref`s (`#/…`) are resolved;
remote ones are refused (no network from a grammar).

Importing this module imports `llama_cpp.llama_grammar`, which imports the `llama_cpp` package
(and numpy); it is only imported when a suite actually uses a schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp import llama_grammar

from promptlab.errors import InputError

_HINT = (
    "use types, properties, required, items, enum, const, anyOf/oneOf, local $ref and anchored "
    "patterns; or write the GBNF yourself"
)


def schema_to_gbnf(schema: dict[str, Any], where: str) -> str:
    """GBNF text whose root rule accepts JSON following `schema` (as far as the converter goes).

    Raises InputError(f"{where}: …") when the schema is not an object, is not JSON-serializable,
    or the converter refuses it. Never falls back to a generic JSON grammar.
    """
    if not isinstance(schema, dict):
        raise InputError(
            f"{where}: a JSON schema must be an object, got {type(schema).__name__}", hint=_HINT
        )
    try:
        # Round-trip through JSON text: the converter takes a string, and this both rejects
        # non-JSON values (sets, objects) and gives the converter its own copy to mutate
        # (resolve_refs rewrites `$ref` values in place).
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: the JSON schema is not plain JSON: {exc}", hint=_HINT) from None
    try:
        gbnf = llama_grammar.json_schema_to_gbnf(text)
    # The converter reports unsupported input through `assert` (AssertionError), ValueError
    # ("Unsupported ref"), and plain Python errors on unexpected shapes (a list where it expects an
    # object, a non-integer minItems...), or runaway recursion on a self-referencing $ref.
    except (AssertionError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, re.error) as exc:  # fmt: skip
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if len(detail) > 200:
            detail = detail[:197] + "..."
        raise InputError(
            f"{where}: llama-cpp-python cannot turn this JSON schema into a grammar: {detail}",
            hint=_HINT,
        ) from None
    if not isinstance(gbnf, str) or not re.search(r"^root ::= ", gbnf, re.MULTILINE):
        raise InputError(
            f"{where}: llama-cpp-python produced no root rule for this JSON schema", hint=_HINT
        )
    return gbnf
