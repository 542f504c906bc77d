"""The AdapterTune method's options (YAML/CLI ``adapter.*``), shared by the parallel (AdaptFormer) adapters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...config_checks import _as_bool, _as_choice, _as_float, _as_int, _as_probability, _check_placement_syntax
from ...errors import ConfigError

__all__ = ["ADAPTER_ACTS", "ADAPTER_INITS", "ADAPTER_SCALINGS", "AdapterConfig", "adapter_scale", "default_grid"]

ADAPTER_INITS = ("zero", "small", "random")
ADAPTER_ACTS = ("gelu", "relu", "silu", "identity")
ADAPTER_SCALINGS = ("constant", "rsqrt", "inverse")


def adapter_scale(alpha: float, rank: int, scaling: str = "constant") -> float:
    """Output scale of a rank-``rank`` adapter: alpha, alpha / sqrt(rank) or alpha / rank."""
    return {"constant": alpha, "rsqrt": alpha / math.sqrt(rank), "inverse": alpha / rank}[scaling]


def default_grid(rank: int) -> list[int]:
    """The nested ranks a rank-``rank`` adapter trains by default: the powers of two below ``rank``, and ``rank``."""
    return [*(2**k for k in range(rank.bit_length()) if 2**k < rank), rank]


@dataclass
class AdapterConfig:
    """Options of the adapter methods (``adapter``, ``parallel``): ``h <- h + alpha * W_up(act(W_down h))``.

    Args:
        rank: bottleneck width r (1 <= r <= the backbone's width).
        alpha: scale of the adapter output; with ``scaling: constant`` (the paper's method) the plain constant.
        scaling: how the output scale depends on the rank: ``constant`` = alpha, ``rsqrt`` = alpha / sqrt(r)
            (rsLoRA's rule: with a zero-init W_up, an Adam step moves the output ~r times as far at rank r, so rank
            is also a step size; this separates capacity from step size), ``inverse`` = alpha / r (LoRA's rule).
        init: ``zero`` (the method: W_up = 0), ``small`` (W_up ~ N(0, 1e-4)) or ``random`` (both random).
        dropout: dropout on the bottleneck activations during training.
        placement: which blocks get an adapter: all, every:K, first:N, last:N or a list of indices.
        act: bottleneck non-linearity.
        nested: train every leading sub-adapter as an adapter of its own (nested ranks, as DyLoRA, Valipour et
            al. 2023): each training step samples a rank r of ``nested_ranks`` (uniformly, from the run's seed
            and the step index) and runs only the first r bottleneck units (``W_down`` rows, ``W_up`` columns)
            at the output scale of rank r under ``scaling``. The model runs at full rank unless a rank is set
            (``set_active_rank``); every rank of the grid is evaluated at the end of a run. Measured against
            separately trained ranks (results/science/RESULTS.md sections 1-2), its curve is biased low at
            every rank (3-5 points at 64 steps; 5-20 at rank 256 trained out; at lr 1e-3 its full rank
            is unstable): a cheap, pessimistic map of the rank curve, not a sweep.
        nested_ranks: the ranks ``nested`` samples, ascending, the largest = ``rank`` (default: the powers of
            two below ``rank``, and ``rank``), as a list or ``"1,4,16"``.
    """

    rank: int = 16
    alpha: float = 1.0
    init: str = "zero"
    dropout: float = 0.0
    placement: str | list[int] = "all"
    act: str = "gelu"
    scaling: str = "constant"
    nested: bool = False
    nested_ranks: list[int] | str | None = None

    def __post_init__(self) -> None:
        self.rank = _as_int("adapter.rank", self.rank, minimum=1)
        self.alpha = _as_float("adapter.alpha", self.alpha, minimum=0.0)
        self.init = _as_choice("adapter.init", self.init, ADAPTER_INITS)
        self.dropout = _as_probability("adapter.dropout", self.dropout)
        self.placement = _check_placement_syntax(self.placement)
        self.act = _as_choice("adapter.act", self.act, ADAPTER_ACTS)
        self.scaling = _as_choice("adapter.scaling", self.scaling, ADAPTER_SCALINGS)
        self.nested = _as_bool("adapter.nested", self.nested)
        self.nested_ranks = _nested_ranks(self.nested_ranks, self.nested, self.rank)

    @property
    def scale(self) -> float:
        """The factor the adapter output is multiplied by: ``alpha`` under ``scaling`` (see the class doc)."""
        return adapter_scale(self.alpha, self.rank, self.scaling)

    @property
    def grid(self) -> tuple[int, ...]:
        """The ranks a nested adapter trains (``nested_ranks`` or the default grid); ``(rank,)`` when not nested."""
        if not self.nested:
            return (self.rank,)
        return tuple(self.nested_ranks or default_grid(self.rank))


def _nested_ranks(value: Any, nested: bool, rank: int) -> list[int] | None:
    """``adapter.nested_ranks`` as a sorted list of distinct ranks in 1..rank that ends at ``rank`` (None: the
    default grid); only with ``adapter.nested``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if not nested:
        raise ConfigError(f"`adapter.nested_ranks` {value!r} needs `adapter.nested: true` (it is the nested grid).")
    items = value.strip("[] ").split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"`adapter.nested_ranks` must be a list of ranks like 1,4,16, got {value!r}.")
    ranks = sorted({_as_int("adapter.nested_ranks", r, minimum=1) for r in items})
    if ranks[-1] != rank:
        raise ConfigError(
            f"`adapter.nested_ranks` {ranks} must end at `adapter.rank` {rank} (the full adapter is the largest "
            f"nested rank); use ranks in 1..{rank} including {rank}."
        )
    return ranks
