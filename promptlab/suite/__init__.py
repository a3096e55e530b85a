"""The suite stage: a suite file read, checked and loaded, before any model loads.

schema.py is promptlab's own strict format (pydantic); loader.py reads a file into it and into
the loaded form (loaded.py), with sources.py for prompt and test files, entries.py for each
test's vars and checks, problems.py for the errors, and promptfoo.py for the promptfoo dialect.
optimize_schema.py is the optimize: section (`promptlab optimize`); strict.py the models' base.
"""

from promptlab.suite.loaded import (
    CheckDef,
    LoadedOptimize,
    LoadedSuite,
    ModelDef,
    PromptDef,
    TestDef,
)
from promptlab.suite.loader import load_suite
from promptlab.suite.optimize_schema import OPTIMIZE_PARAMS, OptimizeSpec
from promptlab.suite.schema import Constraint, ModelSpec, Params, Suite

__all__ = [
    "OPTIMIZE_PARAMS",
    "CheckDef",
    "Constraint",
    "LoadedOptimize",
    "LoadedSuite",
    "ModelDef",
    "ModelSpec",
    "OptimizeSpec",
    "Params",
    "PromptDef",
    "Suite",
    "TestDef",
    "load_suite",
]
