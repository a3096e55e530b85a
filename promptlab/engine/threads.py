"""Whether llama.cpp's default thread count will compete with other processes for the CPUs.

`promptlab run` asks once before the first cell (check_threads): it samples the machine's load
(measure_load, over the time since promptlab started) and, where a model's n_threads is the
default (every usable CPU) and other processes already keep CPUs busy, adds a note to the suite
that says so and what n_threads to set. It never changes the thread count itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from promptlab.backends import is_fake
from promptlab.plan import Plan, usable_cpus


def _cpu_snapshot() -> tuple[float, float, float] | None:
    from promptlab.engine import tune as tuning  # noqa: PLC0415 - its /proc/stat sampler

    return tuning._cpu_snapshot()


# The load window opens when promptlab starts: loading and planning the suite take longer than
# the sample needs, so a run measures the load over that time (minus its own CPU) instead of
# sleeping for it (a cached rerun has no 100 ms to spare).
_STARTED = _cpu_snapshot()
_WINDOW_MAX_S = 5.0  # older than this (a notebook, a long test session): sample afresh


def measure_load(seconds: float = 0.1) -> float | None:
    """How many CPUs' worth of work other processes did over at least `seconds` (Linux:
    /proc/stat, since promptlab started where that is recent), else the 1-minute load average;
    None where neither is known."""
    from promptlab.engine import tune as tuning  # noqa: PLC0415 - its /proc/stat sampler

    before = _STARTED
    if before is None or time.perf_counter() - before[2] > _WINDOW_MAX_S:
        before = _cpu_snapshot()
    if before is not None:
        time.sleep(max(0.0, seconds - (time.perf_counter() - before[2])))
        share = tuning._others_share(before)
        if share is not None:
            return share * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


# Other processes' load, in CPUs, above which llama.cpp's spinning threads stop scaling: each
# thread waits for the slowest at every barrier, so one preempted thread stalls them all.
BUSY_CPUS = 0.5


def check_threads(
    plan: Plan, measure: Callable[[], float | None] | None = None
) -> dict[str, Any] | None:
    """When a model's n_threads is promptlab's default (every usable CPU), sample the machine's
    load and, where other processes already keep CPUs busy, add a note that says so and how to
    set n_threads. The thread count itself is left alone: it is part of the cache key, so a
    choice made from a passing load would make reruns miss the cache. Returns what the manifest
    records (None when every model's n_threads comes from the suite or a fake backend)."""
    chosen = {label: spec for label, spec in _user_threads(plan).items() if spec is None}
    models = [
        m
        for m in plan.models
        if m.label in chosen and not is_fake(m.spec_path) and m.settings.n_threads > 1
    ]
    if not models:
        return None
    cpus = usable_cpus()
    busy = (measure or measure_load)()
    record: dict[str, Any] = {
        "cpus": cpus,
        "others_busy_cpus": None if busy is None else round(busy, 2),
        "default_n_threads": {m.label: m.settings.n_threads for m in models},
        "warned": False,
    }
    if busy is None or busy < BUSY_CPUS:
        return record
    over = [m for m in models if m.settings.n_threads + busy > cpus + BUSY_CPUS]
    if not over:
        return record
    advice = max(1, int(cpus - busy + 0.5))
    labels = ", ".join(f"'{m.label}'" for m in over)
    record["warned"] = True
    record["suggested_n_threads"] = advice
    plan.suite.notes.append(
        f"the machine is busy: other processes keep ~{busy:.1f} of its {cpus} CPUs working, and "
        f"model {labels} uses n_threads {over[0].settings.n_threads} (every CPU, the default); "
        "llama.cpp threads that compete for CPUs can make a run several times slower; "
        f"set n_threads: {advice} on the model in the suite, or measure with `promptlab tune`"
    )
    return record


def _user_threads(plan: Plan) -> dict[str, int | None]:
    """n_threads as each model's suite entry sets it (None: promptlab's default)."""
    out: dict[str, int | None] = {m.label: m.spec.n_threads for m in plan.suite.models}
    for pm in plan.models:  # a --model override is not among the suite's entries
        out.setdefault(pm.label, None)
    return out
