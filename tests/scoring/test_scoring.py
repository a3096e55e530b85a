"""Scores, weights, thresholds, metrics, assert-sets, transforms, Python checks, and the checks
that need a model (choice, llm-rubric, embedding similarity), driven through a stub of the
services the runner lends them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from promptlab import scoring
from promptlab.backends import ChoiceScore, Generation, TokenLogprob
from promptlab.consent import CodeMode
from promptlab.errors import InputError
from promptlab.scoring import CheckContext, PrepareEnv, combine, evaluate, named_scores, prepare
from promptlab.templates import Message, TemplateEnv


class StubServices:
    """Deterministic stand-ins for the model: fixed choice logprobs, a scripted judge, and
    embeddings that are one-hot per word."""

    def __init__(
        self, logprobs: dict[str, float] | None = None, verdict: dict[str, Any] | None = None
    ) -> None:
        self.logprobs = logprobs or {}
        self.verdict = verdict or {"reason": "fine", "pass": True, "score": 0.9}
        self.judged: list[list[Message]] = []
        self.providers: list[str | None] = []

    def choices(self, context: str, add_bos: bool, choices: Sequence[str]) -> list[ChoiceScore]:
        return [ChoiceScore(self.logprobs[c], max(1, len(c.split())), False) for c in choices]

    def judge(self, provider: str | None, messages: Sequence[Message]) -> dict[str, Any]:
        self.providers.append(provider)
        self.judged.append(list(messages))
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict

    def embed(self, provider: str | None, texts: Sequence[str]) -> list[list[float]]:
        self.providers.append(provider)
        vocab = sorted({w for t in texts for w in t.lower().split()})
        return [[float(w in t.lower().split()) for w in vocab] for t in texts]


def env(
    tmp_path: Path, allow_code: bool = False, variables: dict[str, Any] | None = None
) -> PrepareEnv:
    return PrepareEnv(
        base=tmp_path,
        root=tmp_path,
        code=CodeMode.RUN if allow_code else CodeMode.REFUSE,
        templates=TemplateEnv(tmp_path),
        variables=variables or {},
    )


def ctx(output: str, services: StubServices | None = None, **kw: Any) -> CheckContext:
    return CheckContext(output=output, services=services, **kw)


# --- weights, thresholds, metrics --------------------------------------------------------------


def test_weighted_score_and_gating() -> None:
    a = evaluate(prepare("contains", "x", None, "w", weight=3), ctx("x"))
    b = evaluate(prepare("contains", "y", None, "w", weight=1), ctx("x"))
    assert combine([a, b], None) == (False, 0.75)  # all weighted checks must pass
    assert combine([a, b], 0.7) == (True, 0.75)  # with a threshold the score decides
    assert combine([a, b], 0.8) == (False, 0.75)


def test_weight_zero_reports_without_gating() -> None:
    a = evaluate(prepare("contains", "x", None, "w"), ctx("x"))
    info = evaluate(prepare("contains", "nope", None, "w", weight=0), ctx("x"))
    assert info.passed is False
    assert combine([a, info], None) == (True, 1.0)
    assert combine([], None) == (True, 1.0)


def test_negative_weight_refused() -> None:
    with pytest.raises(InputError, match="weight must be a number >= 0"):
        prepare("contains", "x", None, "w", weight=-1)


def test_assert_set_has_its_own_threshold_and_nests() -> None:
    kids = [
        prepare("icontains", "paris", None, "w"),
        prepare("contains", "Berlin", None, "w"),
        prepare("starts-with", "The", None, "w"),
    ]
    group = prepare("assert-set", None, 0.6, "w", children=kids, metric="geo")
    result = evaluate(group, ctx("The capital is Paris"))
    assert result.passed and math.isclose(result.score, 2 / 3)
    assert [c.passed for c in result.children] == [True, False, True]
    assert "2/3 passed" in result.reason
    strict = evaluate(
        prepare("assert-set", None, None, "w", children=kids), ctx("The capital is Paris")
    )
    assert not strict.passed  # without a threshold every child must pass
    outer = prepare(
        "assert-set", None, None, "w", children=[group, prepare("contains", "capital", None, "w")]
    )
    assert evaluate(outer, ctx("The capital is Paris")).passed
    with pytest.raises(InputError, match="needs a non-empty assert"):
        prepare("assert-set", None, None, "w")
    with pytest.raises(InputError, match="only assert-set"):
        prepare("contains", "x", None, "w", children=kids)


def test_named_metrics_average_weighted_scores_including_nested() -> None:
    results = [
        evaluate(prepare("contains", "a", None, "w", metric="acc"), ctx("a")),
        evaluate(prepare("contains", "b", None, "w", metric="acc", weight=3), ctx("a")),
        evaluate(
            prepare(
                "assert-set",
                None,
                None,
                "w",
                children=[prepare("contains", "a", None, "w", metric="style")],
            ),
            ctx("a"),
        ),
    ]
    assert named_scores(results) == {"acc": 0.25, "style": 1.0}


def test_not_form_inverts_scores() -> None:
    result = evaluate(prepare("not-levenshtein", "Paris", None, "w"), ctx("Paris"))
    assert result.passed is False and result.score == 0.0


# --- transforms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "output", "expected"),
    [
        ("strip", "  Paris \n", "Paris"),
        (["strip", "lower"], "  PARIS ", "paris"),
        ("regex:Answer: (\\w+)", "Reasoning... Answer: Rome.", "Rome"),
        ("regex:\\d+", "call 911 now", "911"),
        ({"regex": "(\\w+)$"}, "it is Oslo", "Oslo"),
        ("first-line", "\n  Yes\nbecause", "Yes"),
        ("json", '{"b": 1, "a": 2}', '{"a": 2, "b": 1}'),
    ],
)
def test_builtin_transforms(tmp_path: Path, spec: Any, output: str, expected: str) -> None:
    check = prepare("equals", expected, None, "w", transform=spec, env=env(tmp_path))
    assert evaluate(check, ctx(output)).passed


def test_transform_refuses_javascript_and_gates_python(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="JavaScript transforms don't run here"):
        prepare("equals", "x", None, "w", transform="output.trim()", env=env(tmp_path))
    (tmp_path / "post.py").write_text("def clean(output, context):\n    return output.upper()\n")
    with pytest.raises(InputError, match="--allow-code"):
        prepare("equals", "X", None, "w", transform="file://post.py:clean", env=env(tmp_path))
    check = prepare(
        "equals",
        "X",
        None,
        "w",
        transform="file://post.py:clean",
        env=env(tmp_path, allow_code=True),
    )
    assert evaluate(check, ctx("x")).passed


def test_failing_transform_fails_the_check_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def t(output, context):\n    return 42\n")
    check = prepare(
        "equals", "x", None, "w", transform="file://bad.py:t", env=env(tmp_path, allow_code=True)
    )
    result = evaluate(check, ctx("x"))
    assert (
        not result.passed
        and "transform failed" in result.reason
        and "expected str" in result.reason
    )


# --- python checks -----------------------------------------------------------------------------


def test_python_needs_consent(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="runs Python code from your project; pass --allow-code"):
        prepare("python", "len(output) > 1", None, "s.yaml:4", env=env(tmp_path))


@pytest.mark.parametrize(
    ("code", "threshold", "passed", "score"),
    [
        ("'Paris' in output", None, True, 1.0),
        ("output.startswith('x')", None, False, 0.0),
        ("len(output) / 10", None, True, 0.6),
        ("len(output) / 10", 0.7, False, 0.6),
        ("0", None, False, 0.0),
        ("{'pass': True, 'score': 0.3, 'reason': 'ok-ish'}", None, True, 0.3),
        ("{'pass': True, 'score': 0.3}", 0.5, False, 0.3),
        ("{'score': 0.8}", None, True, 0.8),
        (
            "if 'Paris' in output:\n    return {'pass': True, 'score': 1}\nreturn False",
            None,
            True,
            1.0,
        ),
        ("context['vars']['city'] in output", None, True, 1.0),
        ("7.5", None, True, 1.0),  # scores outside [0, 1] are clamped for combining
    ],
)
def test_python_inline_returns(
    tmp_path: Path, code: str, threshold: float | None, passed: bool, score: float
) -> None:
    check = prepare("python", code, threshold, "w", env=env(tmp_path, allow_code=True))
    result = evaluate(check, ctx("Paris!", vars={"city": "Paris"}))
    assert (result.passed, result.score) == (passed, score)


def test_python_file_and_default_function(tmp_path: Path) -> None:
    (tmp_path / "checks.py").write_text(
        "def get_assert(output, context):\n    return {'pass': True, 'score': 1.0, 'reason': context['config']['why']}\n"
        "def short(output, context):\n    return len(output) < context['config'].get('limit', 5)\n"
    )
    e = env(tmp_path, allow_code=True)
    default = prepare(
        "python", "file://checks.py", None, "w", options={"config": {"why": "because"}}, env=e
    )
    assert evaluate(default, ctx("x")).reason == "because"
    named = prepare(
        "python", "file://checks.py:short", None, "w", options={"config": {"limit": 3}}, env=e
    )
    assert evaluate(named, ctx("ab")).passed and not evaluate(named, ctx("abcd")).passed
    assert named.describe() == "python checks.py:short"
    with pytest.raises(InputError, match="has no function nope"):
        prepare("python", "file://checks.py:nope", None, "w", env=e)
    with pytest.raises(InputError, match="not found"):
        prepare("python", "file://missing.py", None, "w", env=e)


def test_python_errors_become_failed_checks(tmp_path: Path) -> None:
    e = env(tmp_path, allow_code=True)
    boom = evaluate(prepare("python", "1 / 0", None, "w", env=e), ctx("x"))
    assert not boom.passed and "ZeroDivisionError" in boom.reason
    wrong = evaluate(prepare("python", "'yes'", None, "w", env=e), ctx("x"))
    assert not wrong.passed and "return bool, a number" in wrong.reason
    negated = evaluate(prepare("not-python", "1 / 0", None, "w", env=e), ctx("x"))
    assert not negated.passed  # an error is never a pass
    with pytest.raises(InputError, match="syntax error"):
        prepare("python", "if x\n  pass", None, "w", env=e)


# --- similarity --------------------------------------------------------------------------------


def test_lexical_similarity_checks() -> None:
    rouge = evaluate(
        prepare("rouge-l", "the cat sat on the mat", 0.5, "w"), ctx("the cat sat on a mat")
    )
    assert rouge.passed and 0.8 < rouge.score < 1
    bleu = evaluate(prepare("bleu", "the cat sat on the mat", None, "w"), ctx("a dog ran"))
    assert not bleu.passed and bleu.score < 0.1
    ngram = evaluate(prepare("rouge-n", "alpha beta gamma", 0.6, "w"), ctx("alpha beta delta"))
    assert math.isclose(ngram.score, 2 / 3) and ngram.passed
    lev = evaluate(prepare("levenshtein", "kitten", 3, "w"), ctx("sitting"))
    assert lev.passed and lev.details is not None and lev.details["distance"] == 3
    assert not evaluate(prepare("levenshtein", "kitten", 2, "w"), ctx("sitting")).passed
    best = evaluate(
        prepare(
            "similar", ["nothing alike", "hello world"], 0.9, "w", options={"method": "rouge-l"}
        ),
        ctx("Hello, world!"),
    )
    assert best.passed and best.score == 1.0  # the best of several references counts


def test_embedding_similarity_uses_the_provider() -> None:
    services = StubServices()
    check = prepare("similar", "red apple", 0.4, "w", options={"provider": "judge.gguf"})
    result = evaluate(check, ctx("a red apple", services))
    assert services.providers == ["judge.gguf"]
    assert result.passed and math.isclose(result.score, 2 / math.sqrt(3 * 2))
    assert not evaluate(check, ctx("blue sky", services)).passed
    nomodel = evaluate(check, ctx("a red apple"))
    assert not nomodel.passed and "needs a model" in nomodel.reason


def test_similarity_thresholds_validated() -> None:
    with pytest.raises(InputError, match="similarity in \\[0, 1\\]"):
        prepare("similar", "x", 1.5, "w")
    with pytest.raises(InputError, match="unknown similarity method"):
        prepare("similar", "x", None, "w", options={"method": "cosine-ish"})
    assert prepare("similar", "x", None, "w").threshold == 0.75  # promptfoo's default


# --- choice ------------------------------------------------------------------------------------


def choice(
    value: Any,
    choices: Any,
    threshold: float | None = None,
    method: str | None = None,
    variables: dict[str, Any] | None = None,
) -> scoring.Check:
    options: dict[str, Any] = {"choices": choices}
    if method:
        options["method"] = method
    return prepare(
        "choice",
        value,
        threshold,
        "w",
        options=options,
        env=PrepareEnv(Path(), Path(), variables=variables or {}),
    )


def test_choice_reports_probabilities_acc_and_margin() -> None:
    services = StubServices({" Paris": -1.5, " Lyon": -2.0, " Marseille": -2.0})
    result = evaluate(choice(" Paris", [" Paris", " Lyon", " Marseille"]), ctx("", services))
    assert result.passed
    d = result.details
    assert d is not None
    z = sum(math.exp(x) for x in (-1.5, -2.0, -2.0))
    assert math.isclose(d["probs"][" Paris"], math.exp(-1.5) / z, rel_tol=1e-5)
    assert math.isclose(result.score, math.exp(-1.5) / z, rel_tol=1e-5)
    assert (
        d["chosen"] == " Paris" and d["acc"] and d["acc_norm"] is False
    )  # " Marseille" per byte wins
    assert math.isclose(d["margin"], (math.exp(-1.5) - math.exp(-2.0)) / z, rel_tol=1e-4)


def test_choice_acc_norm_and_threshold() -> None:
    services = StubServices({" Paris": -1.5, " Lyon": -2.0, " Marseille": -2.0})
    norm = evaluate(
        choice(" Paris", [" Paris", " Lyon", " Marseille"], method="acc_norm"), ctx("", services)
    )
    assert not norm.passed and norm.details is not None and norm.details["chosen"] == " Marseille"
    high = evaluate(
        choice(" Paris", [" Paris", " Lyon", " Marseille"], threshold=0.9), ctx("", services)
    )
    assert not high.passed  # right answer, but not confident enough


def test_choice_inputs() -> None:
    assert choice(1, ["A", "B"]).value == "B"  # an index
    assert choice("B", [" A", " B"]).value == " B"  # the stripped text
    assert choice("B", "options", variables={"options": ["A", "B"]}).options["choices"] == (
        "A",
        "B",
    )
    assert choice("B", '["A", "B"]').options["choices"] == ("A", "B")  # JSON from a CSV cell
    assert choice("B", "A|B").options["choices"] == ("A", "B")
    with pytest.raises(InputError, match="not one of the choices"):
        choice("C", ["A", "B"])
    with pytest.raises(InputError, match="at least two options"):
        choice("A", ["A"])
    with pytest.raises(InputError, match="distinct"):
        choice("A", ["A", "A"])
    with pytest.raises(InputError, match="acc or acc_norm"):
        choice("A", ["A", "B"], method="best")


# --- llm-rubric --------------------------------------------------------------------------------


def test_llm_rubric_with_default_prompt(tmp_path: Path) -> None:
    services = StubServices(verdict={"reason": "mentions Paris", "pass": True, "score": 0.8})
    check = prepare(
        "llm-rubric",
        "Names the capital of France",
        None,
        "w",
        env=env(tmp_path, variables={"country": "France"}),
    )
    result = evaluate(check, ctx("Paris", services, vars={"country": "France"}))
    assert result.passed and result.score == 0.8
    assert result.details is not None and result.details["judge_reason"] == "mentions Paris"
    messages = services.judged[0]
    assert [m.role for m in messages] == ["system", "user"]
    assert "Names the capital of France" in messages[1].content and "Paris" in messages[1].content
    assert services.providers == [None]  # the model under test judges by default


def test_llm_rubric_threshold_custom_prompt_and_provider(tmp_path: Path) -> None:
    services = StubServices(verdict={"reason": "meh", "pass": True, "score": 0.4})
    e = env(tmp_path, variables={"topic": "cats"})
    check = prepare(
        "llm-rubric",
        "Is about {{ topic }}",
        0.5,
        "w",
        options={
            "provider": "gemma3",
            "rubricPrompt": "Grade: {{ output }} against {{ rubric }} ({{ topic }})",
        },
        env=e,
    )
    result = evaluate(check, ctx("dogs", services, vars={"topic": "cats"}))
    assert not result.passed and result.score == 0.4  # the threshold overrides the judge's pass
    assert services.judged[0] == [
        Message("user", "Grade: dogs against Is about {{ topic }} (cats)")
    ]
    assert services.providers == ["gemma3"]
    (tmp_path / "judge.j2").write_text(
        "{% user %}{{ rubric }} :: {{ output }} :: {{ nope }}{% enduser %}"
    )
    with pytest.raises(InputError, match="'nope' is undefined"):
        prepare("llm-rubric", "x", None, "w", options={"rubricPrompt": "file://judge.j2"}, env=e)


def test_llm_rubric_failures_are_reasons(tmp_path: Path) -> None:
    services = StubServices()
    services.verdict = ValueError("judge returned no complete JSON verdict")  # type: ignore[assignment]
    check = prepare("llm-rubric", "be nice", None, "w", env=env(tmp_path))
    result = evaluate(check, ctx("x", services))
    assert not result.passed and "no complete JSON verdict" in result.reason
    assert "needs a judge model" in evaluate(check, ctx("x")).reason


# --- perplexity, max-tokens ----------------------------------------------------------------------


def gen(logprobs: list[float]) -> Generation:
    tokens = [TokenLogprob(f"t{i}", lp) for i, lp in enumerate(logprobs)]
    return Generation("".join(t.text for t in tokens), 3, len(tokens), "stop", tokens=tokens)


def test_perplexity_and_score() -> None:
    g = gen([math.log(0.5), math.log(0.25)])  # perplexity = 1 / sqrt(0.125) ≈ 2.83
    ppl = evaluate(prepare("perplexity", None, 3, "w"), ctx("x", generation=g))
    assert (
        ppl.passed
        and ppl.details is not None
        and math.isclose(ppl.details["perplexity"], 2.8284, rel_tol=1e-4)
    )
    assert not evaluate(prepare("perplexity", None, 2, "w"), ctx("x", generation=g)).passed
    score = evaluate(prepare("perplexity-score", None, 0.25, "w"), ctx("x", generation=g))
    assert score.passed and math.isclose(score.score, 1 / 3.8284, rel_tol=1e-4)  # 1/(1+ppl)
    assert not evaluate(prepare("perplexity-score", None, 0.3, "w"), ctx("x", generation=g)).passed
    report_only = evaluate(prepare("perplexity-score", None, None, "w"), ctx("x", generation=g))
    assert report_only.passed and report_only.score < 0.3  # promptfoo: no threshold, no gate
    assert not evaluate(prepare("perplexity", None, 3, "w"), ctx("x")).passed  # no logprobs


def test_max_tokens() -> None:
    g = gen([-0.1] * 5)
    assert evaluate(prepare("max-tokens", 5, None, "w"), ctx("x", generation=g)).passed
    assert not evaluate(prepare("max-tokens", None, 4, "w"), ctx("x", generation=g)).passed
    with pytest.raises(InputError, match="needs a threshold in tokens"):
        prepare("max-tokens", None, None, "w")


def test_results_serialize_to_json(tmp_path: Path) -> None:
    services = StubServices({"A": -1.0, "B": -2.0})
    result = evaluate(choice("A", ["A", "B"]), ctx("", services))
    data = json.loads(json.dumps(result.as_dict()))
    assert data["details"]["chosen"] == "A" and data["pass"] is True
