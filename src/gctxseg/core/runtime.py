"""The machine a run uses: device choice, seeds, ``torch.compile`` and the allocator's freed memory."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import sys

import numpy as np
import torch

__all__ = ["seed_everything", "resolve_device", "cxx_compiler", "compile_model", "HEAP_TRIM_BYTES", "keep_freed_memory",
           "cpu_threads"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)



@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """torch's CPU threads set to ``threads`` inside the block (None: left as they are), restored after it."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; anything else is passed to ``torch.device``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
    return dev



def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile would build CPU kernels with (``$CXX``, g++, c++, clang++), or None."""
    candidates = (os.environ.get("CXX", ""), "g++", "c++", "clang++")
    return next((path for path in map(shutil.which, filter(None, candidates)) if path), None)



def compile_model(model: torch.nn.Module, device: torch.device, *, freeze: bool = False) -> torch.nn.Module:
    """``torch.compile(model)`` where it can work, else ``model`` itself and one line on stderr saying why.

    Graphs that fail to compile later (at the first call) run eagerly too: dynamo's ``suppress_errors`` logs the
    reason and falls back instead of stopping a training run.

    Args:
        model: the module to compile.
        device: where it runs (a CPU needs a C++ compiler).
        freeze: for processes that only infer with fixed weights (``gctxseg predict``): inductor's ``freezing``
            folds the weights into the inference graphs as constants, which lets it pre-pack them for oneDNN
            (the larger part of compile's CPU speed-up, docs/speed.md). Weights changed after the first call
            are not seen: never for a model that is still training.
    """
    if device.type == "cpu" and cxx_compiler() is None:
        print(
            "--compile: torch.compile needs a C++ compiler on CPU and none was found (install g++ or set CXX); "
            "running eagerly",
            file=sys.stderr,
        )
        return model
    try:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
        if device.type == "cpu":  # inductor's C++ build probes for CUDA and logs that a CPU machine has none
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        if freeze:
            import torch._inductor.config

            torch._inductor.config.freezing = True  # process-wide; only graphs compiled without grad are frozen
        # fixed shapes: the training batch never changes, the last validation batch adds one more graph
        return torch.compile(model, dynamic=False)
    except Exception as err:  # e.g. an unsupported Python version: raised by torch.compile itself
        print(f"--compile: torch.compile is unavailable here ({err}); running eagerly", file=sys.stderr)
        return model


# glibc serves large blocks (above a threshold of at most 32 MiB) with mmap and returns them to the kernel when freed,
# and trims the heap's top above 64 MiB: on a CPU each training step then faults its activations in page by page
# again, with much of the CPU time in the kernel. Serving every block from the heap and not trimming it lets the
# next step reuse the memory (benchmarks/allocator.py measures both ways; docs/real-oct.md, run 1 of the cv).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
HEAP_TRIM_BYTES = 2**31 - 1  # mallopt takes a C int: freed memory is kept up to 2 GiB above what is in use


def keep_freed_memory() -> bool:
    """Ask glibc to serve and keep tensor memory in its heap (Linux with glibc only; a no-op elsewhere or when
    ``GCTXSEG_KEEP_FREED_MEMORY=0``). Returns whether it was applied."""
    if os.environ.get("GCTXSEG_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_BYTES))
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator is left as it is
        return False
