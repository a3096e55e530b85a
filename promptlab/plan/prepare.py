"""A suite loaded and planned for running: user code is imported only with the person's consent.

`promptlab run` and `promptlab optimize` both start here (core.prepare, for validate and
render, never imports user code).
"""

from __future__ import annotations

from pathlib import Path

from promptlab import consent
from promptlab.consent import CodeMode
from promptlab.plan.cells import Plan, Selection, build_plan
from promptlab.suite import load_suite


def prepare_run(
    path: Path,
    *,
    model: str | None = None,
    allow_code: bool = False,
    selection: Selection | None = None,
    skip_unsupported: bool = False,
) -> tuple[Plan, consent.Consent]:
    """Load, check and render a suite for `run`: user code is imported only with consent."""
    suite = load_suite(path, model_override=model, skip_unsupported=skip_unsupported)
    granted = consent.for_run(allow_code, suite.root)
    mode = CodeMode.RUN if granted.granted else CodeMode.REFUSE
    try:
        return build_plan(suite, code=mode, selection=selection), granted
    except consent.ConsentError as exc:
        if not suite.claims_code:
            raise
        raise consent.ConsentError(
            exc.message, hint=f"{exc.hint}; the suite's own allow_code: does not count"
        ) from None
