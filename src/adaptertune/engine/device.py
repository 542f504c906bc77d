"""Device, precision and CUDA math settings of a run (resolved once, then passed as values)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["autocast_context", "cuda_backend_settings", "resolve_device", "resolve_precision"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Device '{device}' asked for, but CUDA is not available here; use --device cpu.")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA GPUs that support it (Ampere and later), fp16 (with a GradScaler) on older ones
    (V100, T4), fp32 on CPU (these CPUs have no native bf16: ~170x slower matmuls)."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


@contextlib.contextmanager
def cuda_backend_settings(device: torch.device) -> Iterator[dict[str, Any]]:
    """On CUDA: TF32 for the fp32 matmuls and convolutions left outside autocast and ``cudnn.benchmark``
    (the input size is fixed), restored on exit. Yields the settings in force (recorded in the run summary);
    ``{}`` on CPU."""
    if device.type != "cuda":
        yield {}
        return
    keys = ("matmul_tf32", "cudnn_tf32", "cudnn_benchmark")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    try:
        yield dict(zip(keys, (True, True, True), strict=True))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = old


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
