"""Multi-process training under ``torchrun``: env parsing, process group, DDP wrap, metric reduction.

``torchrun --nproc-per-node N -m adaptertune train ...`` starts N processes that each read RANK,
WORLD_SIZE and LOCAL_RANK. Each rank trains on its shard of every global batch (see
:class:`~adaptertune.data.sampling.ResumableSampler`), DDP averages the gradients, metric sums are
all-reduced, and only rank 0 writes files. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = [
    "DistInfo",
    "all_true",
    "barrier",
    "current",
    "dist_info_from_env",
    "gather_objects",
    "gather_tensors",
    "init_distributed",
    "rank_seed",
    "reduce_min",
    "reduce_sums",
    "shutdown",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env(env: Mapping[str, str]) -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (absent: a single process). Pure.

    Raises:
        ConfigError: a variable is not an integer or out of range.
    """
    if "WORLD_SIZE" not in env:
        return DistInfo()
    values = {}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        raw = env.get(key, "0")
        try:
            values[key] = int(raw)
        except ValueError:
            raise ConfigError(f"Environment variable {key}={raw!r} must be an integer (set by torchrun).") from None
    info = DistInfo(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise ConfigError(
            f"Bad torchrun environment: RANK={info.rank}, WORLD_SIZE={info.world_size}, "
            f"LOCAL_RANK={info.local_rank}; need 0 <= RANK < WORLD_SIZE."
        )
    return info


def current() -> DistInfo:
    """The initialized process group's rank and size (a single process when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(), 0)
    return DistInfo()


def init_distributed(info: DistInfo, device: torch.device, timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group torchrun describes (MASTER_ADDR/PORT come from its env); returns this rank's
    device (``cuda:LOCAL_RANK`` on GPUs). A collective that waits longer than ``timeout_minutes`` for the
    other ranks fails the run (``train.dist_timeout_minutes``)."""
    if not info.enabled or torch.distributed.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(
        backend, rank=info.rank, world_size=info.world_size, timeout=datetime.timedelta(minutes=timeout_minutes)
    )
    return device


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP over ``model`` when a process group is up (also one of world size 1, which torchrun never starts:
    benchmarks/gpu_check.sh uses it to run DDP over NCCL on one GPU); else ``model`` itself."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _backend_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sums(values: Sequence[float]) -> list[float]:
    """Sum each value over all ranks (float64); identity in a single process."""
    if not current().enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_backend_device())
    torch.distributed.all_reduce(t)
    return t.tolist()


def reduce_min(value: float) -> float:
    """The smallest ``value`` over all ranks; identity in a single process."""
    if not current().enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_backend_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return float(t.item())


def gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (same shape and dtype on all ranks), on the CPU, in rank order."""
    if not current().enabled:
        return [t.cpu()]
    local = t.to(_backend_device())
    out = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(out, local)
    return [o.cpu() for o in out]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not current().enabled:
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int) -> int:
    """Seed of the per-rank RNG (dropout, drop-path) of ``rank``; rank 0 keeps ``seed``. Pure.

    ``seed + rank * 2**32``: distinct for every (seed, rank) with seed < 2**32, so no two ranks (nor two
    runs with other seeds) draw the same masks.
    """
    return seed + (rank << 32)


def all_true(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (keeps the ranks' control flow together)."""
    if not current().enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_backend_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if current().enabled:
        torch.distributed.barrier()
