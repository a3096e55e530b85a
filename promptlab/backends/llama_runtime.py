"""The llama.cpp library around a model: its log, the build's facts, and two process-level guards.

llama-cpp-python's `verbose=False` swallows real load errors, so promptlab keeps every log line
itself (`take_log`). `without_extra_buffers` is the AMX guard (llama.cpp#20824) for loads that go
through the high-level `Llama` object; `stderr_to` catches what llama.cpp's grammar parser prints
with a bare fprintf.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from promptlab.backends.native import make_libstdcxx_global

# Before llama_cpp loads its libraries: see promptlab.backends.native.
make_libstdcxx_global()

import llama_cpp.llama_cpp as llama_lib  # after make_libstdcxx_global, deliberately

# --- logging ---------------------------------------------------------------------------------
# ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 cont. llama-cpp-python's own mapping is off by
# one, which is why real errors vanish with verbose=False; we keep every line ourselves.
_LOG: list[tuple[int, str]] = []
_LOG_LOCK = threading.Lock()
_LOG_LIMIT = 4000


@llama_lib.llama_log_callback  # type: ignore[untyped-decorator]
def _on_log(level: int, text: bytes, _user: Any) -> None:
    with _LOG_LOCK:
        if len(_LOG) < _LOG_LIMIT:
            _LOG.append((int(level), text.decode("utf-8", "replace")))


def _install_log() -> None:
    llama_lib.llama_log_set(_on_log, ctypes.c_void_p(0))


_install_log()


def take_log() -> list[tuple[int, str]]:
    with _LOG_LOCK:
        out = list(_LOG)
        _LOG.clear()
    return out


# --- build facts -----------------------------------------------------------------------------


def system_info() -> str:
    return str(llama_lib.llama_print_system_info().decode("utf-8", "replace")).strip()


def build_has_amx(info: str | None = None) -> bool:
    """True when ggml was compiled with AMX kernels (a GGML_NATIVE build on a Sapphire Rapids+ CPU)."""
    info = system_info() if info is None else info
    return re.search(r"\bAMX_INT8 = 1\b", info) is not None


def supports_gpu_offload() -> bool:
    return bool(llama_lib.llama_supports_gpu_offload())


@contextlib.contextmanager
def without_extra_buffers(active: bool) -> Iterator[None]:
    """Load with `use_extra_bufts=False` (no AMX, no repack buffers).

    ggml's AMX matmul segfaults on the first decode on these Xeons (llama.cpp#20824). The Python
    `Llama` constructor has no parameter for it, but builds its params from
    `llama_cpp.llama_model_default_params()` at call time, so we wrap that function for the
    duration of the load only.
    """
    if not active:
        yield
        return
    original = llama_lib.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    llama_lib.llama_model_default_params = patched
    try:
        yield
    finally:
        llama_lib.llama_model_default_params = original


# --- grammar validation --------------------------------------------------------------------


@contextlib.contextmanager
def stderr_to(sink: list[str]) -> Iterator[None]:
    """Redirect file descriptor 2 to a temporary file and append what was written to `sink`.

    llama.cpp's grammar parser reports syntax errors with a bare `fprintf(stderr, …)` (not through
    the log callback), and the library must print nothing. This is process-wide for the few
    microseconds of a parse: another thread's stderr output in that window lands in `sink` too.
    """
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (a daemon): nothing can be printed anyway
        yield
        return
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", "replace"))
    finally:
        os.close(saved)


def grammar_problem(stderr_text: str, log: list[tuple[int, str]]) -> str:
    """The one-line reason llama.cpp gave for refusing a grammar."""
    # e.g. "parse: error parsing grammar: expecting ')' at <rest of the grammar>"
    m = re.search(r"error parsing grammar: ([^\n]*)", stderr_text)
    errors = [t.strip() for lvl, t in log if lvl == 4 and t.strip()]
    # "failed to parse grammar" only repeats the parser's message; the others (left recursion,
    # missing root) are the real reason.
    specific = [e for e in errors if e != "failed to parse grammar"]
    detail = m.group(1).strip() if m else (specific[0] if specific else "")
    detail = " ".join(detail.split()) or "parse error"
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return detail
