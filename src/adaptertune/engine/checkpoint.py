"""Safetensors files and the training checkpoint (never unpickles arbitrary objects).

A training checkpoint is ONE safetensors file, so one ``rename`` publishes it whole: tensors (the
trainable parameters ``model.*``, the selected model's copy ``best.*``, the AdamW state ``optim.*``, the RNG
states ``rng.*`` and the EMA's ``ema.*``) plus a JSON document in the metadata: the loop state
(:class:`~adaptertune.engine.state.TrainState`), the optimizer's hyper-parameters and the grad-scaler state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import CheckpointError
from .distributed import DistInfo, gather_tensors
from .state import TrainState

__all__ = [
    "CHECKPOINT_FORMAT",
    "gather_rank_rng",
    "load_checkpoint",
    "load_tensors",
    "load_trained_tensors",
    "rank_rng_state",
    "restore_training_state",
    "save_checkpoint",
    "save_tensors",
]

CHECKPOINT_FORMAT = "adaptertune-checkpoint-1"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Save tensors as safetensors, atomically; ``metadata`` is stored as JSON under the key ``adaptertune``."""
    from safetensors.torch import save

    meta = {"adaptertune": json.dumps(metadata or {}, sort_keys=True)}
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read tensors and metadata saved by :func:`save_tensors`."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("adaptertune", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(
            f"Checkpoint '{path}' is truncated or not a safetensors file ({type(e).__name__})."
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"Checkpoint '{path}' has foreign metadata (not an adaptertune file).")
    return tensors, meta


# ---------------------------------------------------------------- training checkpoint
def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    rank_rng: dict[str, torch.Tensor] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the full resume state of a training loop to ``path`` (one atomic file).

    Args:
        state: the loop state (its ``best_state`` tensors as ``best.*``, the rest as the ``state`` document).
        rank_rng: under torchrun, every rank's RNG state (:func:`rank_rng_state` of each rank, keys
            ``rng.rank{r}.*``); without it only this process's RNG is kept.
        extra: more resume tensors under their own prefix (the EMA's ``ema.*``), read back by the caller.
    """
    tensors: dict[str, torch.Tensor] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            tensors[f"model.{n}"] = p.detach()
    for n, v in state.best_state.items():
        tensors[f"best.{n}"] = v
    opt = optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain_state.setdefault(str(idx), {})[key] = value
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    tensors.update(rank_rng or {})
    tensors.update(extra or {})
    meta = {
        "format": CHECKPOINT_FORMAT,
        "state": state.to_meta(),
        "optimizer": {"param_groups": opt["param_groups"], "plain_state": plain_state},
        "scaler": scaler.state_dict(),
    }
    save_tensors(path, tensors, meta)


def rank_rng_state() -> dict[str, torch.Tensor]:
    """This process's RNG state as ``{"torch_cpu": ..., "cuda": ...}`` (cuda: the current device, if in use)."""
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a training checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated, or not a training checkpoint (e.g. an adapter file).
    """
    tensors, meta = load_tensors(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"'{path}' is not an adaptertune training checkpoint (format {meta.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r})."
        )
    return tensors, meta


def load_trained_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved trainable tensors into ``model``; the keys must be exactly its trainable parameters."""
    params = dict(model.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != want:
        missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
        raise CheckpointError(f"{source} does not match the model: missing {missing[:3]}, unexpected {extra[:3]}.")
    with torch.no_grad():
        for n, v in tensors.items():
            if params[n].shape != v.shape:
                raise CheckpointError(
                    f"{source}: '{n}' has shape {tuple(v.shape)}, the model {tuple(params[n].shape)}."
                )
            params[n].copy_(v)


def restore_training_state(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    source: str,
    rank: int = 0,
) -> TrainState:
    """Load parameters, optimizer, scaler and RNG state from a checkpoint; returns the loop state.

    ``rank``: under torchrun, the process's rank; it gets its own saved RNG state where the checkpoint has one.

    Raises:
        CheckpointError: the checkpoint's tensors do not match the model's trainable parameters, or its loop
            state is not this version's.
    """
    device = next(p for p in model.parameters() if p.requires_grad).device
    best = {k[len("best.") :]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    loop_state = TrainState.from_meta(meta["state"], best, source)
    saved = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_trained_tensors(model, saved, source)
    opt_meta = meta["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            # AdamW keeps `step` on the CPU unless capturable/fused; moments live with the parameter
            state.setdefault(int(idx), {})[key] = v if key == "step" else v.to(device)
    for idx, entry in opt_meta["plain_state"].items():
        state.setdefault(int(idx), {}).update(entry)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{source}: optimizer state does not match the model ({e}).") from None
    if meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if f"rng.rank{rank}.torch_cpu" in tensors:  # written by a multi-process run: this rank's own streams
        torch.set_rng_state(tensors[f"rng.rank{rank}.torch_cpu"])
        if f"rng.rank{rank}.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors[f"rng.rank{rank}.cuda"])
        return loop_state
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return loop_state


def gather_rank_rng(dist: DistInfo) -> dict[str, torch.Tensor] | None:
    """Every rank's RNG state as checkpoint tensors ``rng.rank{r}.*`` (a collective); None in one process."""
    if not dist.enabled:
        return None
    out: dict[str, torch.Tensor] = {}
    for name, state in rank_rng_state().items():
        for r, t in enumerate(gather_tensors(state)):
            out[f"rng.rank{r}.{name}"] = t
    return out
