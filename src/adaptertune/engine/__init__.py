"""Training engine: optimizer, schedule, loop, metrics, checkpoints. Knows nothing of the registries."""

from .checkpoint import (
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    load_tensors,
    read_jsonl,
    save_checkpoint,
    save_tensors,
)
from .device import autocast_context, cuda_backend_settings, resolve_device, resolve_precision
from .loop import Callback, FitResult, evaluate, fit
from .metrics import topk_correct, topk_hits
from .optim import build_optimizer, param_groups, warmup_cosine

__all__ = [
    "Callback",
    "FitResult",
    "atomic_write_bytes",
    "atomic_write_text",
    "autocast_context",
    "build_optimizer",
    "cuda_backend_settings",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_tensors",
    "param_groups",
    "read_jsonl",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "save_tensors",
    "topk_correct",
    "topk_hits",
    "warmup_cosine",
]
