"""Native-library hygiene that has to happen before llama_cpp is imported.

Kept apart from promptlab.backends.llama so it can be called, and tested, without loading
llama.cpp at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

LIBSTDCXX = "libstdc++.so.6"


def make_libstdcxx_global() -> None:
    """Put the system libstdc++ into the global symbol scope before llama.cpp's libraries.

    llama-cpp-python dlopens libllama with RTLD_GLOBAL, and a CUDA build's libggml-cuda exports
    its own copies of libstdc++ symbols (std::locale among them). Python extensions load
    libstdc++ with RTLD_LOCAL, so every C++ library loaded afterwards bound std::locale to
    libggml-cuda's copy. Measured on an H100 machine (CUDA 13, llama-cpp-python 0.3.36): with
    pyarrow installed, importing pandas after the model load aborted with "free(): invalid
    pointer" (the backtrace: std::locale::~locale from libggml-cuda.so inside pyarrow's static
    initializers), and importing pandas or scipy before the load crashed the load itself, on
    the GPU and with n_gpu_layers 0. Made global first, the one libstdc++ wins every lookup,
    llama.cpp's own included, and both orders ran cleanly.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # a libc++-only system: nothing to do
            ctypes.CDLL(LIBSTDCXX, mode=ctypes.RTLD_GLOBAL)
