"""Scoring: checks on a model output, in promptfoo's vocabulary so existing configs carry over.

The registry maps check names to the family modules that prepare and evaluate them; this package
exports what the suite loader, the planner and the runner use.
"""

from promptlab.scoring.checks import (
    Check,
    CheckContext,
    CheckResult,
    PrepareEnv,
    Services,
    Verdict,
    split_list,
)
from promptlab.scoring.choice import choice_verdict
from promptlab.scoring.graded import JUDGE_SCHEMA
from promptlab.scoring.registry import (
    ALL_TYPES,
    BASE_TYPES,
    JSON_TYPES,
    JUDGE_TYPES,
    LIST_TYPES,
    NEEDS_LOGPROBS,
    NO_OUTPUT,
    PROMPTFOO_ONLY,
    RUNTIME_TYPES,
    SIMILARITY_TYPES,
    TEXT_TYPES,
    UNNEGATABLE,
    apply,
    check_type,
    combine,
    evaluate,
    named_scores,
    prepare,
)
from promptlab.scoring.similarity import DEFAULT_THRESHOLDS
from promptlab.scoring.structured import schema_validator

__all__ = [
    "ALL_TYPES",
    "BASE_TYPES",
    "DEFAULT_THRESHOLDS",
    "JSON_TYPES",
    "JUDGE_SCHEMA",
    "JUDGE_TYPES",
    "LIST_TYPES",
    "NEEDS_LOGPROBS",
    "NO_OUTPUT",
    "PROMPTFOO_ONLY",
    "RUNTIME_TYPES",
    "SIMILARITY_TYPES",
    "TEXT_TYPES",
    "UNNEGATABLE",
    "Check",
    "CheckContext",
    "CheckResult",
    "PrepareEnv",
    "Services",
    "Verdict",
    "apply",
    "check_type",
    "choice_verdict",
    "combine",
    "evaluate",
    "named_scores",
    "prepare",
    "schema_validator",
    "split_list",
]
