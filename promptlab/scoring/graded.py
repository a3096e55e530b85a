"""Model-graded checks: llm-rubric and model-graded-closedqa, judged by a local model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from promptlab import files
from promptlab.errors import InputError
from promptlab.scoring.checks import Check, CheckContext, PrepareEnv, Verdict, _bool

if TYPE_CHECKING:
    import jinja2

    from promptlab.templates import Message, TemplateEnv


JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        # reason first: the judge explains before it decides.
        "reason": {"type": "string", "maxLength": 400},
        "pass": {"type": "boolean"},
        "score": {"type": "number"},
    },
    "required": ["reason", "pass", "score"],
}


def _prep_judge(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    env: PrepareEnv,
) -> tuple[Any, float | None]:
    if value is None and opts.get("rubricPrompt") is not None:
        value = ""  # a custom rubric prompt may carry the whole rubric itself
    if not isinstance(value, str) or (not value.strip() and opts.get("rubricPrompt") is None):
        raise InputError(f"{where}: '{type_}' needs the rubric as text in value:")
    if threshold is not None and not 0 <= threshold <= 1:
        raise InputError(f"{where}: a {type_} threshold is a score in [0, 1], got {threshold:g}")
    if env.templates is None:
        raise InputError(f"{where}: '{type_}' needs the suite's template environment")
    opts["rubric_template"] = _rubric_template(opts.get("rubricPrompt"), where, env)
    opts["templates"] = env.templates
    # Render once now with a placeholder output, so a broken rubric prompt stops the run early.
    _judge_messages(opts["rubric_template"], value, "<output>", env.variables, where, env.templates)
    return value, threshold


def _rubric_template(spec: Any, where: str, env: PrepareEnv) -> jinja2.Template:
    from importlib import resources  # noqa: PLC0415

    assert env.templates is not None
    if spec is None:
        source = (resources.files("promptlab") / "builtin" / "judge.j2").read_text(encoding="utf-8")
        return env.templates.from_string(source, f"{where} (default rubric prompt)")
    if isinstance(spec, list):
        # promptfoo's message-list form: [{role, content}, ...]
        parts = []
        for msg in spec:
            if not isinstance(msg, dict) or "content" not in msg:
                raise InputError(f"{where}: rubricPrompt messages need role and content")
            role = msg.get("role", "user")
            parts.append(f"{{% {role} %}}{msg['content']}{{% end{role} %}}")
        return env.templates.from_string("".join(parts), f"{where} (rubricPrompt)")
    if not isinstance(spec, str):
        raise InputError(
            f"{where}: rubricPrompt is Jinja text, file://template.j2 or a message list"
        )
    if spec.startswith("file://"):
        return env.templates.load_file(files.ref_target(spec, env.base), where)
    return env.templates.from_string(spec, f"{where} (rubricPrompt)")


def _judge_messages(
    template: jinja2.Template,
    rubric: str,
    output: str,
    variables: Mapping[str, Any],
    where: str,
    templates: TemplateEnv,
) -> list[Message]:
    from promptlab.templates import split_roles  # noqa: PLC0415

    text = templates.render(
        template, {**variables, "output": output, "rubric": rubric, "vars": dict(variables)}, where
    )
    return split_roles(text, where)[0]


def _judge(check: Check, ctx: CheckContext) -> Verdict:
    if ctx.services is None:
        return _bool(False, "llm-rubric needs a judge model (run it with promptlab run)")

    template: jinja2.Template = check.options["rubric_template"]
    templates: TemplateEnv = check.options["templates"]
    messages = _judge_messages(template, check.value, ctx.output, ctx.vars, check.where, templates)
    verdict = ctx.services.judge(check.options.get("provider"), messages)
    score = float(verdict["score"])
    score = min(1.0, max(0.0, score if score <= 1 else score / 10 if score <= 10 else 1.0))
    ok = score >= check.threshold if check.threshold is not None else bool(verdict["pass"])
    details = {
        "judge_reason": verdict["reason"],
        "judge_pass": verdict["pass"],
        "judge_score": verdict["score"],
    }
    return ok, score, f"judge: {verdict['reason']}", details
