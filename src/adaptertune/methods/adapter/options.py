"""The AdapterTune method's options (YAML/CLI ``adapter.*``), shared by the parallel (AdaptFormer) adapters."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...config_checks import _as_choice, _as_float, _as_int, _as_probability, _check_placement_syntax

__all__ = ["ADAPTER_ACTS", "ADAPTER_INITS", "ADAPTER_SCALINGS", "AdapterConfig", "adapter_scale"]

ADAPTER_INITS = ("zero", "small", "random")
ADAPTER_ACTS = ("gelu", "relu", "silu", "identity")
ADAPTER_SCALINGS = ("constant", "rsqrt", "inverse")


def adapter_scale(alpha: float, rank: int, scaling: str = "constant") -> float:
    """Output scale of a rank-``rank`` adapter: alpha, alpha / sqrt(rank) or alpha / rank."""
    return {"constant": alpha, "rsqrt": alpha / math.sqrt(rank), "inverse": alpha / rank}[scaling]


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
    """

    rank: int = 16
    alpha: float = 1.0
    init: str = "zero"
    dropout: float = 0.0
    placement: str | list[int] = "all"
    act: str = "gelu"
    scaling: str = "constant"

    def __post_init__(self) -> None:
        self.rank = _as_int("adapter.rank", self.rank, minimum=1)
        self.alpha = _as_float("adapter.alpha", self.alpha, minimum=0.0)
        self.init = _as_choice("adapter.init", self.init, ADAPTER_INITS)
        self.dropout = _as_probability("adapter.dropout", self.dropout)
        self.placement = _check_placement_syntax(self.placement)
        self.act = _as_choice("adapter.act", self.act, ADAPTER_ACTS)
        self.scaling = _as_choice("adapter.scaling", self.scaling, ADAPTER_SCALINGS)

    @property
    def scale(self) -> float:
        """The factor the adapter output is multiplied by: ``alpha`` under ``scaling`` (see the class doc)."""
        return adapter_scale(self.alpha, self.rank, self.scaling)
