"""The plan stage: suite × templates → every cell rendered, before any model loads (no model).

cells.py builds the plan (one cell per model × prompt × test × setting × repeat, its prompt
rendered, its checks prepared, its grammar checked); chat.py applies a model's chat template.
"""

from promptlab.plan.cells import (
    Cell,
    Grammar,
    Plan,
    PlannedModel,
    Selection,
    build_plan,
    schedule,
    usable_cpus,
)

__all__ = [
    "Cell",
    "Grammar",
    "Plan",
    "PlannedModel",
    "Selection",
    "build_plan",
    "schedule",
    "usable_cpus",
]
