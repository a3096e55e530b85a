"""Terminal views (rich). Presentation only: no decisions about runs live here.

One module per group of commands, as in cli/: `run` (run and report), `project` (validate,
render, models, tune), `reports` (compare, history, gates) and `optimize` (imported by
cli/optimize.py itself); `terminal` holds the consoles and the escaping they all use. Every view
but optimize's is importable from here, as `console.print_run` and so on.
"""

from promptlab.console.project import (
    TuneProgress,
    print_models,
    print_render,
    print_tune,
    print_validate,
)
from promptlab.console.reports import (
    print_compare,
    print_gates,
    print_history,
    print_template_history,
)
from promptlab.console.run import (
    MAX_OTHER_VERDICTS,
    RichProgress,
    print_report,
    print_run,
    print_verdicts,
    skipped_summary,
    summary_table,
)
from promptlab.console.terminal import err, escape, out, print_notes

__all__ = [
    "MAX_OTHER_VERDICTS",
    "RichProgress",
    "TuneProgress",
    "err",
    "escape",
    "out",
    "print_compare",
    "print_gates",
    "print_history",
    "print_models",
    "print_notes",
    "print_render",
    "print_report",
    "print_run",
    "print_template_history",
    "print_tune",
    "print_validate",
    "print_verdicts",
    "skipped_summary",
    "summary_table",
]
