"""The precision policy in one place: which autocast dtype ``--amp`` means on a device, and the context to run in.

Training, validation, prediction and the benchmarks all run their forward passes under :func:`autocast_context`,
so ``--amp auto`` means the same thing everywhere.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

__all__ = ["AMP_CHOICES", "autocast_dtype", "autocast_context"]

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full fp32).

    ``auto`` picks bf16 on CUDA GPUs that support it (else fp16) and bf16 on CPUs with native bf16
    instructions (AVX512-BF16 / AMX), where it is several times faster than fp32; fp32 elsewhere.
    """
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or a do-nothing context for fp32 (``dtype`` None).

    A fresh context per call: use it in a ``with`` statement each time (autocast contexts are not reentrant).
    """
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
