"""`choice` scoring on the engine: the log-likelihood of each option after a shared context.

The context is decoded once into a stream (or found there already); each continuation's tokens
but the last are decoded after it with logits for every position and removed again, so the
stream holds exactly the context afterwards. Where the load-time self-test found it exact
("batched continuations"), continuations of equal length are decoded together, one stream each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptlab.backends.native import make_libstdcxx_global

# Before llama_cpp loads its libraries: see promptlab.backends.native.
make_libstdcxx_global()

import llama_cpp.llama_cpp as lib
import numpy as np

from promptlab.backends import CellError, ChoiceScore
from promptlab.backends.llama_context import DecodeError, Stream

if TYPE_CHECKING:
    from promptlab.backends.llama_engine import Engine


def score_choices(
    engine: Engine, ctx_tokens: list[int], conts: list[list[int]], *, fresh: bool = False
) -> list[ChoiceScore]:
    """Log-likelihood of each continuation after the context, sharing one context decode.

    Each continuation's tokens but the last are decoded after the context with logits for
    every position, and removed again, so the stream holds exactly the context afterwards
    and its last row is kept for the next call on the same context. Where the self-test
    found it exact, continuations of equal length are decoded together, one stream each
    (`_together`); otherwise one after another."""
    n = len(ctx_tokens)
    longest = max((len(c) for c in conts), default=0)
    engine.ensure(_choice_streams(engine, conts), n + longest)
    if fresh:
        stream = engine.streams[0]
        engine.forget(stream)
    else:
        stream, _ = engine.stream_for(ctx_tokens, engine.streams)
    try:
        if stream.row is None or stream.tokens != ctx_tokens:
            engine.fill(stream, ctx_tokens)
            stream.row = engine.row(-1).copy()
        last = stream.row
        done: dict[int, ChoiceScore] = {}
        for group in choice_groups(engine, conts):
            done.update(_together(engine, stream, n, last, conts, group))
        return [
            done[i] if i in done else _continuation(engine, stream, n, last, cont)
            for i, cont in enumerate(conts)
        ]
    except DecodeError as exc:
        engine.forget(stream)
        raise CellError(f"llama.cpp: {exc}") from None


def _choice_streams(engine: Engine, conts: list[list[int]]) -> int:
    if not engine.choice_rows:
        return 1
    return max(1, min(engine.parallel, sum(1 for c in conts if len(c) >= 2)))


def choice_groups(engine: Engine, conts: list[list[int]]) -> list[list[int]]:
    """Which continuations to decode together: equal lengths (llama.cpp splits a batch over
    separate streams into steps of equal tokens per stream, so unequal ones would be
    decoded in pieces), at most as many rows as the self-test proved exact, one stream
    each. Depends only on the continuations and the engine's settings."""
    ctx = engine.context()
    by_len: dict[int, list[int]] = {}
    for i, cont in enumerate(conts):
        if len(cont) >= 2:
            by_len.setdefault(len(cont) - 1, []).append(i)
    groups: list[list[int]] = []
    for length, members in sorted(by_len.items()):
        per = min(ctx.slots, engine.choice_rows // length, ctx.n_batch // length)
        if per < 2:
            continue
        groups.extend(
            members[k : k + per] for k in range(0, len(members), per) if len(members[k:]) >= 2
        )
    return groups


def _together(
    engine: Engine, stream: Stream, n: int, last: Any, conts: list[list[int]], group: list[int]
) -> dict[int, ChoiceScore]:
    """Score the continuations in `group` (equal lengths) in one decode: the context stream
    is copied into as many streams, each decodes its continuation, and every stream is cut
    back to the context, so all of them hold it for later cells."""
    ctx = engine.context()
    others = [s for s in engine.streams if s is not stream][: len(group) - 1]
    lanes = [stream, *others]
    for lane in others:
        ctx.copy(stream.seq, lane.seq)
        lane.tokens, lane.reusable, lane.row = list(stream.tokens), stream.reusable, None
    bodies = [conts[i][:-1] for i in group]
    items = [
        (t, n + j, lane.seq, True)
        for lane, body in zip(lanes, bodies, strict=True)
        for j, t in enumerate(body)
    ]
    try:
        ctx.decode(items)
        out: dict[int, ChoiceScore] = {}
        k = 0
        for i, body in zip(group, bodies, strict=True):
            rows = [last[None, :]] + [engine.row(k + j)[None, :].copy() for j in range(len(body))]
            k += len(body)
            out[i] = _score(conts[i], rows)
        return out
    finally:
        for lane in lanes:
            if not ctx.rm(lane.seq, n):
                engine.forget(lane)


def _continuation(
    engine: Engine, stream: Stream, n: int, last: Any, cont: list[int]
) -> ChoiceScore:
    if not cont:
        return ChoiceScore(0.0, 0, True)
    ctx = engine.context()
    rows = [last[None, :]]
    body = cont[:-1]  # row i predicts token i+1: the last token itself is never decoded
    try:
        for start in range(0, len(body), ctx.n_batch):
            part = body[start : start + ctx.n_batch]
            ctx.decode([(t, n + start + j, stream.seq, True) for j, t in enumerate(part)])
            ptr = lib.llama_get_logits(ctx.ptr)
            rows.append(np.ctypeslib.as_array(ptr, shape=(len(part), engine.n_vocab)).copy())
    finally:
        if body and not ctx.rm(stream.seq, n):
            engine.forget(stream)  # recurrent memory cannot drop the tail: start over
    return _score(cont, rows)


def _score(cont: list[int], rows: list[Any]) -> ChoiceScore:
    logits = np.vstack(rows).astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    target = np.asarray(cont, dtype=np.int64)
    lp = logits[np.arange(len(cont)), target] - lse
    greedy = bool((logits.argmax(axis=1) == target).all())
    return ChoiceScore(float(lp.sum()), len(cont), greedy)
