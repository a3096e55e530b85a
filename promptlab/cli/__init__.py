"""The command line. Thin: parse arguments, call one function in `promptlab.core` (or
`promptlab.optimize`), print.

One module per command group: `project` (init, validate, render, trust, models, schema, tune),
`run` (run and its alias eval), `reports` (report, compare, history, baseline), `optimize`;
`options` declares the options they share, `outcome` the gates' verdict that run and report
print, and `app` holds the Typer app and `main`, the one place errors become exit codes.

Imports stay light at module level so `promptlab --help` answers fast; the core (and through it
pydantic, jinja2, pandas, llama_cpp) is imported inside each command.
"""

from __future__ import annotations

from promptlab.cli import optimize, project, reports, run
from promptlab.cli.app import app, main

__all__ = ["app", "main"]

# Every command, registered here rather than where it is defined because Typer lists commands in
# the order they were registered and `promptlab --help` keeps its order across the groups. (A
# group such as baseline is listed after the commands wherever it is added.)
app.command()(project.init)
app.command()(project.validate)
app.command()(project.render)
app.command()(run.run)
# promptfoo's name for the same command, so `promptfoo eval` habits (and scripts) carry over.
app.command("eval", help="promptfoo's name for `run`: the same command, the same options.")(run.run)
app.command()(reports.report)
app.command()(reports.compare)
app.command()(reports.history)
app.add_typer(reports.baseline_app, name="baseline")
app.command()(project.trust)
app.command()(optimize.optimize)
app.command()(project.models)
app.command()(project.schema)
app.command()(project.tune)
