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
from .loop import Callback, FitResult, autocast_context, evaluate, fit, resolve_device, resolve_precision
from .metrics import topk_correct
from .optim import build_optimizer, param_groups, warmup_cosine

__all__ = [
    "Callback",
    "FitResult",
    "atomic_write_bytes",
    "atomic_write_text",
    "autocast_context",
    "build_optimizer",
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
    "warmup_cosine",
]
