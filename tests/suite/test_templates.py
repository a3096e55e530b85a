"""The user-template Jinja environment: strict, sandboxed, project-confined, with role blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Project

from promptlab.errors import InputError
from promptlab.templates import Message, TemplateEnv, split_roles


def render_file(project: Project, rel: str, **variables: Any) -> str:
    env = TemplateEnv(project.root)
    tpl = env.load_file(project.root / rel, rel)
    return env.render(tpl, variables, "test")


def render_inline(project: Project, source: str, **variables: Any) -> str:
    env = TemplateEnv(project.root)
    return env.render(env.from_string(source, "inline"), variables, "test")


def messages(project: Project, rel: str, **variables: Any) -> list[Message]:
    msgs, had_roles = split_roles(render_file(project, rel, **variables), rel)
    assert had_roles
    return msgs


# --- strictness and sandbox ----------------------------------------------------------------


def test_undefined_variable_is_an_error(project: Project) -> None:
    with pytest.raises(InputError, match=r"'nmae' is undefined.*define the variable"):
        render_inline(project, "Hi {{ nmae }}", name="Ada")


def test_undefined_attribute_is_an_error(project: Project) -> None:
    with pytest.raises(InputError, match="has no attribute 'missing'"):
        render_inline(project, "{{ user.missing }}", user={"name": "Ada"})


def test_undefined_error_names_file_and_line(project: Project) -> None:
    project.write("prompts/t.j2", "one\ntwo\nthree {{ nope }}\n")
    with pytest.raises(InputError, match=r"prompts/t\.j2:3: 'nope' is undefined"):
        render_file(project, "prompts/t.j2")


def test_defined_variables_and_filters_render(project: Project) -> None:
    assert render_inline(project, "{{ name | upper }}-{{ n + 1 }}", name="ada", n=1) == "ADA-2"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% set xs = [1] %}{{ xs.append(2) }}",  # immutable sandbox: no mutation
    ],
    ids=["dunder-mro", "globals", "list-append"],
)
def test_sandbox_refuses_python_internals(project: Project, source: str) -> None:
    with pytest.raises(InputError, match=r"refused: .*not Python internals"):
        render_inline(project, source)


# --- includes ------------------------------------------------------------------------------


def test_include_is_relative_to_project_root(project: Project) -> None:
    project.write("partials/greet.j2", "Hello {{ name }}")
    project.write("prompts/deep/main.j2", "{% include 'partials/greet.j2' %}!")
    assert render_file(project, "prompts/deep/main.j2", name="Ada") == "Hello Ada!"


def test_dot_slash_include_is_relative_to_including_template(project: Project) -> None:
    project.write("prompts/sib.j2", "sibling")
    project.write("sib.j2", "root-level")
    project.write("prompts/main.j2", "[{% include './sib.j2' %}]")
    assert render_file(project, "prompts/main.j2") == "[sibling]"


def test_dot_dot_include_is_relative_to_including_template(project: Project) -> None:
    project.write("prompts/shared.j2", "shared {{ x }}")
    project.write("prompts/sub/main.j2", "[{% include '../shared.j2' %}]")
    assert render_file(project, "prompts/sub/main.j2", x=1) == "[shared 1]"


def test_nested_relative_includes_resolve_per_template(project: Project) -> None:
    project.write("a/one.j2", "1{% include './b/two.j2' %}")
    project.write("a/b/two.j2", "2{% include '../three.j2' %}")
    project.write("a/three.j2", "3")
    assert render_file(project, "a/one.j2") == "123"


@pytest.mark.parametrize(
    "include",
    ["../../secret.txt", "../secret.txt", "SECRET_ABS"],
    ids=["dot-dot-twice", "dot-dot-once-from-root", "absolute"],
)
def test_include_outside_project_is_refused(project: Project, include: str) -> None:
    secret = project.root.parent / "secret.txt"  # really exists, just outside the project
    secret.write_text("TOP SECRET")
    name = str(secret) if include == "SECRET_ABS" else include
    # `../../secret.txt` from prompts/ and `../secret.txt` from the root both reach `secret`.
    where = "prompts/main.j2" if include == "../../secret.txt" else "main.j2"
    project.write(where, f"{{% include '{name}' %}}")
    with pytest.raises(InputError, match="outside the project") as exc:
        render_file(project, where)
    assert "TOP SECRET" not in str(exc.value)
    assert "move it inside the project" in str(exc.value)


def test_inline_include_outside_project_is_refused(project: Project) -> None:
    (project.root.parent / "secret.txt").write_text("TOP SECRET")
    with pytest.raises(InputError, match="outside the project"):
        render_inline(project, "{% include '../secret.txt' %}")


def test_template_file_outside_project_is_refused(project: Project) -> None:
    outside = project.root.parent / "outside.j2"
    outside.write_text("hi")
    env = TemplateEnv(project.root)
    with pytest.raises(InputError, match="outside the project"):
        env.load_file(outside, "here")


def test_missing_include_names_it(project: Project) -> None:
    project.write("prompts/main.j2", "x\n{% include 'nope.j2' %}")
    with pytest.raises(InputError, match=r"prompts/main\.j2:2: included template 'nope\.j2'"):
        render_file(project, "prompts/main.j2")


# --- role blocks ---------------------------------------------------------------------------


def test_role_blocks_become_messages(project: Project) -> None:
    project.write(
        "p.j2",
        """
        {% system %}
        You are terse.
        {% endsystem %}
        {% user %}Q: {{ q }}{% enduser %}
        {% assistant %}A: Paris{% endassistant %}
        {% user %}Q: {{ q2 }}{% enduser %}
        """,
    )
    assert messages(project, "p.j2", q="France?", q2="Japan?") == [
        Message("system", "You are terse."),
        Message("user", "Q: France?"),
        Message("assistant", "A: Paris"),
        Message("user", "Q: Japan?"),
    ]


def test_role_blocks_inside_a_for_loop(project: Project) -> None:
    project.write(
        "p.j2",
        """
        {% system %}Answer with a city.{% endsystem %}
        {% for ex in examples %}
        {% user %}{{ ex.q }}{% enduser %}
        {% assistant %}{{ ex.a }}{% endassistant %}
        {% endfor %}
        {% user %}{{ question }}{% enduser %}
        """,
    )
    examples = [{"q": "Italy?", "a": "Rome"}, {"q": "Japan?", "a": "Tokyo"}]
    msgs = messages(project, "p.j2", examples=examples, question="Peru?")
    assert [(m.role, m.content) for m in msgs] == [
        ("system", "Answer with a city."),
        ("user", "Italy?"),
        ("assistant", "Rome"),
        ("user", "Japan?"),
        ("assistant", "Tokyo"),
        ("user", "Peru?"),
    ]


def test_role_blocks_inside_an_included_file(project: Project) -> None:
    project.write(
        "prompts/fewshot.j2",
        "{% user %}2+2?{% enduser %}{% assistant %}4{% endassistant %}\n",
    )
    project.write(
        "prompts/main.j2",
        """
        {% system %}Do sums.{% endsystem %}
        {% include './fewshot.j2' %}
        {% user %}{{ sum }}{% enduser %}
        """,
    )
    msgs = messages(project, "prompts/main.j2", sum="3+3?")
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2].content == "4"
    assert msgs[3].content == "3+3?"


def test_nested_role_block_is_an_error(project: Project) -> None:
    project.write("p.j2", "{% user %}a {% system %}b{% endsystem %}{% enduser %}")
    with pytest.raises(InputError, match="cannot be nested"):
        split_roles(render_file(project, "p.j2"), "p.j2")


def test_text_outside_role_blocks_is_an_error(project: Project) -> None:
    project.write("p.j2", "stray words\n{% user %}hi{% enduser %}")
    with pytest.raises(InputError, match=r"p\.j2: text outside a role block: 'stray words'"):
        split_roles(render_file(project, "p.j2"), "p.j2")


def test_text_after_last_role_block_is_an_error(project: Project) -> None:
    project.write("p.j2", "{% user %}hi{% enduser %}\ntrailing words")
    with pytest.raises(InputError, match="text after the last role block: 'trailing words'"):
        split_roles(render_file(project, "p.j2"), "p.j2")


def test_whitespace_between_role_blocks_is_fine(project: Project) -> None:
    project.write(
        "p.j2", "\n\n{% user %} hi {% enduser %}\n   \n{% assistant %}yo{% endassistant %}\n"
    )
    assert messages(project, "p.j2") == [Message("user", "hi"), Message("assistant", "yo")]


def test_unclosed_role_block_is_a_syntax_error(project: Project) -> None:
    project.write("p.j2", "{% user %}hi\n")
    env = TemplateEnv(project.root)
    with pytest.raises(InputError, match=r"p\.j2:\d+: Jinja syntax error"):
        env.load_file(project.root / "p.j2", "p.j2")


def test_plain_template_is_one_user_message(project: Project) -> None:
    project.write("p.j2", "Q: What is the capital of {{ country }}?\nA:")
    text = render_file(project, "p.j2", country="France")
    msgs, had_roles = split_roles(text, "p.j2")
    assert had_roles is False
    assert msgs == [Message("user", "Q: What is the capital of France?\nA:")]


# --- variables() ---------------------------------------------------------------------------


def test_variables_follow_includes(project: Project) -> None:
    project.write("partials/a.j2", "{{ from_root_include }}{% include 'prompts/./c.j2' %}")
    project.write("prompts/c.j2", "{{ from_nested }}")
    project.write("prompts/b.j2", "{{ from_sibling }}")
    project.write(
        "prompts/main.j2",
        "{{ top }}{% include 'partials/a.j2' %}{% include './b.j2' %}"
        "{% for x in items %}{{ x }}{% endfor %}{% set local = 1 %}{{ local }}",
    )
    env = TemplateEnv(project.root)
    tpl = env.load_file(project.root / "prompts/main.j2", "main")
    assert env.variables(tpl) == {
        "top",
        "from_root_include",
        "from_nested",
        "from_sibling",
        "items",
    }


def test_variables_of_inline_template_follow_includes(project: Project) -> None:
    project.write("partials/a.j2", "{{ inner }}")
    env = TemplateEnv(project.root)
    source = "{{ outer }} {% include 'partials/a.j2' %}"
    tpl = env.from_string(source, "inline")
    assert env.variables(tpl, source) == {"outer", "inner"}


def test_variables_survive_include_cycles_and_missing_includes(project: Project) -> None:
    project.write(
        "a.j2",
        "{{ a }}{% if a %}{% include 'b.j2' %}{% endif %}{% include 'gone.j2' ignore missing %}",
    )
    project.write("b.j2", "{{ b }}{% if b %}{% include 'a.j2' %}{% endif %}")
    env = TemplateEnv(project.root)
    assert env.variables(env.load_file(project.root / "a.j2", "a")) == {"a", "b"}


# --- trailing newlines ---------------------------------------------------------------------


def test_trailing_newline_of_a_file_is_kept(project: Project) -> None:
    # promptfoo sends the text as written; base models and `choice` answer differently without
    # the newline after "A:" (Jinja's default drops it).
    project.write("p.j2", "Q: {{ q }}\nA:\n")
    assert render_file(project, "p.j2", q="x") == "Q: x\nA:\n"


def test_every_trailing_newline_is_kept(project: Project) -> None:
    project.write("p.j2", "A:\n\n")
    assert render_file(project, "p.j2") == "A:\n\n"


def test_included_file_trailing_newline_is_kept(project: Project) -> None:
    project.write("part.j2", "middle\n")
    project.write("p.j2", "[{% include 'part.j2' %}]\n")
    assert render_file(project, "p.j2") == "[middle\n]\n"


def test_inline_template_trailing_newline_is_kept(project: Project) -> None:
    env = TemplateEnv(project.root)
    tpl = env.from_string("Q: {{ q }}\nA:\n", "inline")
    assert env.render(tpl, {"q": "x"}, "test") == "Q: x\nA:\n"


def test_leading_and_inner_whitespace_is_kept(project: Project) -> None:
    project.write("p.j2", "  indented\n\nline {{ x }}\n")
    assert render_file(project, "p.j2", x=1) == "  indented\n\nline 1\n"


def test_role_content_is_stripped(project: Project) -> None:
    project.write("p.j2", "{% user %}\n\n  Hi {{ x }}  \n\n{% enduser %}\n")
    assert messages(project, "p.j2", x="there") == [Message("user", "Hi there")]


def test_root_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    env = TemplateEnv(tmp_path / "real" / ".." / "real")
    assert env.root == (tmp_path / "real").resolve()
