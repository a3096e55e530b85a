"""`promptlab optimize`: search a prompt's demos, instructions, variables and params on the
suite's own checks, and declare a winner only when held-out tests show it is better.

split.py (seeded, stratified split) · space.py (what is searched, checked) · evaluate.py
(cells through plan and the engine's runner and cache, the budget) · search.py (optuna racing,
the held-out verdict) · propose.py (model-written instructions) · template.py (the winner as a
Jinja file) · report.py (the run folder and its HTML page) · run.py (the command, resume). Its
terminal views are promptlab/console/optimize.py (only the console imports rich).
"""

from promptlab.optimize.run import OptimizeProgress, OptimizeResult, optimize, resume

__all__ = ["OptimizeProgress", "OptimizeResult", "optimize", "resume"]
