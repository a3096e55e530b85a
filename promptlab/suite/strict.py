"""The base of every suite model: unknown keys refused with the closest valid one, and the
marker of a field that may name files. Its own module so that schema.py and optimize_schema.py
(the optimize: section, which Suite holds) can both build on it without importing each other."""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


def file_field(what: str) -> dict[str, Any]:
    """Schema marker for a field that may name files (`file://…`). Every such file is read
    through files.confine; tests/cli/test_security.py lists the marked fields from the JSON schema and
    plants a reference outside the project in each, so a new field cannot skip the check."""
    return {"x-promptlab-file": what}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # promptfoo keys that would change results here: refused with the reason and the alternative
    # (rather than "unknown key", which would suggest a typo).
    promptfoo_refused: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        # Our own check (instead of pydantic's extra_forbidden) so the message can suggest the
        # closest valid key. Every bad key of the mapping is reported, not just the first.
        if isinstance(data, dict):
            allowed = sorted({f.alias or name for name, f in cls.model_fields.items()})
            errors: list[InitErrorDetails] = []
            for key in data:
                if key in cls.promptfoo_refused:
                    error = PydanticCustomError(
                        "promptfoo_refused",
                        "promptfoo's '{key}' is not supported: {why}",
                        {"key": str(key), "why": cls.promptfoo_refused[key]},
                    )
                elif key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                    hint = (
                        f"did you mean '{close[0]}'?"
                        if close
                        else "valid keys: " + ", ".join(allowed)
                    )
                    error = PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'; {hint}",
                        {"key": str(key), "hint": hint},
                    )
                else:
                    continue
                # loc () = this mapping; validation_errors appends the key from ctx.
                errors.append(InitErrorDetails(type=error, loc=(), input=data[key]))
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return data
