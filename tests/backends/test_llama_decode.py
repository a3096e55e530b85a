"""The fill planner and the text of a generation (backends/llama_decode.py): pure, no model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptlab.backends.llama_decode import (
    MIN_CHUNK,
    FillMode,
    TextState,
    canonical_ends,
    plan_fill,
)

tokens = st.lists(st.integers(0, 3), min_size=1, max_size=1200)


@given(
    cached=tokens, new=tokens, reusable=st.integers(0, 1200), n_batch=st.sampled_from([16, 64, 512])
)
def test_split_invariant_plans_keep_every_shared_token_but_decode_at_least_min_chunk(
    cached: list[int], new: list[int], reusable: int, n_batch: int
) -> None:
    reusable = min(reusable, len(cached))
    plan = plan_fill(
        cached, reusable, new, mode=FillMode.SPLIT_INVARIANT, n_batch=n_batch, chunk=128
    )
    n = len(new)
    assert plan.keep + plan.decoded == n
    assert plan.keep <= reusable and cached[: plan.keep] == new[: plan.keep]
    assert all(size <= n_batch for size in plan.chunks)
    if n < MIN_CHUNK:
        assert plan == plan_fill(
            [], 0, new, mode=FillMode.SPLIT_INVARIANT, n_batch=n_batch, chunk=128
        )
        assert plan.keep == 0 and plan.chunks == (n,) and plan.reusable_after == (0,)
        return
    assert all(size >= MIN_CHUNK for size in plan.chunks)
    # Nothing reusable is wasted beyond the MIN_CHUNK tokens the last decode needs.
    shared = 0
    while shared < min(reusable, n) and cached[shared] == new[shared]:
        shared += 1
    assert plan.keep == min(shared, n - MIN_CHUNK)
    assert plan.reusable_after[-1] == n


@given(
    cached=tokens, new=tokens, reusable=st.integers(0, 1200), chunk=st.sampled_from([16, 64, 128])
)
def test_canonical_plans_cut_at_fixed_boundaries(
    cached: list[int], new: list[int], reusable: int, chunk: int
) -> None:
    reusable = min(reusable, len(cached))
    plan = plan_fill(cached, reusable, new, mode=FillMode.CANONICAL, n_batch=512, chunk=chunk)
    n = len(new)
    assert plan.keep + plan.decoded == n and plan.keep < n
    assert plan.keep <= reusable and cached[: plan.keep] == new[: plan.keep]
    # Every chunk ends where a decode from an empty cache would end it.
    ends = canonical_ends(n, chunk, 512)
    assert plan.keep == 0 or plan.keep in ends
    whole = {e for e in range(1, n + 1) if e % chunk == 0 or (e in (16, 32, 64) and e < chunk)}
    end = aligned = plan.keep
    for size, reusable_after in zip(plan.chunks, plan.reusable_after, strict=True):
        end += size
        assert end in ends
        if end in whole:
            aligned = end  # a whole chunk: reusable later
        assert reusable_after == aligned  # a partial or merged last chunk is not
    assert plan.chunks[-1] >= MIN_CHUNK or len(ends) == 1 or plan.keep == ends[-2]


def test_the_identical_prompt_decodes_min_chunk_again() -> None:
    t = list(range(100))
    plan = plan_fill(t, 100, t, mode=FillMode.SPLIT_INVARIANT, n_batch=512, chunk=128)
    assert (plan.keep, plan.chunks) == (92, (8,))
    long = plan_fill(
        [], 0, list(range(1100)), mode=FillMode.SPLIT_INVARIANT, n_batch=512, chunk=128
    )
    assert long.chunks == (367, 367, 366)  # split evenly, never a tiny last decode


@pytest.mark.parametrize(
    ("pieces", "stop", "text", "stopped"),
    [
        ([b" Paris", b".", b"\n", b"Q"], ("\n",), " Paris.", True),
        ([b" a", b"b", b"c"], ("bc", "ab"), " ", True),  # the earliest stop cuts
        ([b" x", b"STO", b"P", b" y"], ("STOP",), " x", True),  # across tokens
        ([b"caf", b"\xc3", b"\xa9 ok"], ("ok",), "caf\u00e9 ", True),  # UTF-8 split across tokens
        ([b"caf", b"\xc3"], (), "caf", False),  # an unfinished character is dropped
        ([b"abc"], (), "abc", False),
    ],
)
def test_text_state(pieces: list[bytes], stop: tuple[str, ...], text: str, stopped: bool) -> None:
    state = TextState(stop)
    hit = False
    for piece in pieces:
        if state.add(piece):
            hit = True
            break
    assert (hit, state.text) == (stopped, text)
