"""Training engine: optimizer, schedule, loop, metrics, checkpoints. Knows nothing of the registries."""

from .checkpoint import load_checkpoint, load_tensors, save_checkpoint, save_tensors
from .device import autocast_context, cuda_backend_settings, resolve_device, resolve_precision
from .epoch import Callback
from .loop import FitResult, evaluate, fit
from .metrics import topk_correct, topk_hits
from .optim import build_optimizer, param_groups, warmup_cosine
from .state import TrainState
from .stopping import Selection

__all__ = [
    "Callback",
    "FitResult",
    "Selection",
    "TrainState",
    "autocast_context",
    "build_optimizer",
    "cuda_backend_settings",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_tensors",
    "param_groups",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "save_tensors",
    "topk_correct",
    "topk_hits",
    "warmup_cosine",
]
