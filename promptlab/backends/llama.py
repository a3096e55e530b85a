"""The llama.cpp backend (llama-cpp-python). The only module that imports `llama_cpp`.

Everything llama-cpp-python would otherwise default is set explicitly (n_ctx 512, n_gpu_layers 0,
n_threads cpu_count()//2, per-API temperatures, a process-wide fixed seed, flash_attn off), and
its logs go through our own callback because `verbose=False` swallows real load errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp.llama_cpp as llama_lib

from promptlab.backends import CellError, Generation, LoadSettings, RuntimeInfo, Sampling
from promptlab.errors import BackendError

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


def _take_log() -> list[tuple[int, str]]:
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
def _without_extra_buffers(active: bool) -> Iterator[None]:
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


class LlamaBackend:
    def __init__(self, path: Path, settings: LoadSettings) -> None:
        self.settings = settings
        offload_ok = supports_gpu_offload()
        requested = settings.n_gpu_layers
        n_gpu_layers = (-1 if offload_ok else 0) if requested is None else requested
        amx = build_has_amx()
        _take_log()
        try:
            with _without_extra_buffers(amx):
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_gpu_layers=n_gpu_layers,
                    n_ctx=settings.n_ctx,
                    n_batch=settings.n_batch,
                    n_ubatch=settings.n_batch,
                    n_threads=settings.n_threads,
                    n_threads_batch=settings.n_threads_batch,
                    seed=settings.seed,
                    flash_attn=settings.flash_attn,
                    logits_all=False,
                    embedding=False,
                    offload_kqv=True,
                    use_mmap=True,
                    use_mlock=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            errors = [t.strip() for lvl, t in _take_log() if lvl in (3, 4) and t.strip()]
            detail = errors[-1] if errors else str(exc)
            raise BackendError(
                f"{path}: llama.cpp could not load the model: {detail}",
                hint="check the file is a complete GGUF supported by llama-cpp-python "
                + llama_cpp.__version__,
            ) from None
        log = _take_log()
        self.n_layer = int(llama_lib.llama_model_n_layer(self.llm.model))
        offloaded = self._offloaded(log)
        self.info = RuntimeInfo(
            backend="llama.cpp",
            facts={
                "engine_version": f"llama-cpp-python {llama_cpp.__version__}",
                "llama_cpp_python": llama_cpp.__version__,
                "gpu_offload_supported": offload_ok,
                "n_gpu_layers_requested": n_gpu_layers,
                "layers_offloaded": offloaded,
                "n_layer": self.n_layer,
                "device": self._device(log),
                "amx_workaround": amx,
                "system_info": system_info(),
                "warnings": [t.strip() for lvl, t in log if lvl == 3 and t.strip()][:20],
            },
        )

    def _offloaded(self, log: list[tuple[int, str]]) -> int:
        for _, text in log:
            m = re.search(r"offloaded (\d+)/(\d+) layers to GPU", text)
            if m:
                return int(m.group(1))
        # CPU builds print no summary line; count the per-layer device assignments instead.
        return sum(1 for _, t in log if re.search(r"layer\s+\d+ assigned to device (?!CPU)", t))

    @staticmethod
    def _device(log: list[tuple[int, str]]) -> str:
        for _, text in log:
            m = re.search(r"using device (\S+) \(([^)]*)\)", text)
            if m:
                return f"{m.group(1)} ({m.group(2)})"
        return "CPU"

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        # special=True: control tokens written in a template (e.g. <|im_start|>) are real tokens,
        # matching what llama-cpp-python's own chat and completion paths do.
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count_tokens(self, text: str, add_bos: bool) -> int:
        return len(self.tokenize(text, add_bos))

    def generate(self, text: str, add_bos: bool, sampling: Sampling) -> Generation:
        tokens = self.tokenize(text, add_bos)
        n_ctx = self.settings.n_ctx
        if len(tokens) >= n_ctx:
            raise CellError(
                f"prompt is {len(tokens)} tokens but n_ctx is {n_ctx}",
                hint="raise n_ctx in models: or shorten the prompt",
            )
        ctx = self.llm.ctx
        llama_lib.llama_perf_context_reset(ctx)
        try:
            # Token ids, so llama-cpp-python adds no BOS of its own: BOS is decided above, from the
            # GGUF flag for raw prompts and by the chat template for chat prompts.
            out: Any = self.llm.create_completion(
                prompt=tokens,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                min_p=sampling.min_p,
                typical_p=1.0,
                repeat_penalty=sampling.repeat_penalty,
                frequency_penalty=0.0,
                presence_penalty=0.0,
                stop=list(sampling.stop),
                seed=sampling.seed,
                stream=False,
            )
        except ValueError as exc:
            raise CellError(f"llama.cpp: {exc}") from None
        perf = llama_lib.llama_perf_context(ctx)
        choice = out["choices"][0]
        usage = out["usage"]
        return Generation(
            text=choice["text"],
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            finish_reason=str(choice.get("finish_reason") or "stop"),
            prompt_eval_tokens=int(perf.n_p_eval),
            prompt_eval_ms=float(perf.t_p_eval_ms),
            eval_ms=float(perf.t_eval_ms),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()
