"""FLOPs of one training step of a registered method: its formula, looked up in the registry.

The arithmetic (which matmuls a step runs, forward and backward) is :mod:`adaptertune.methods.flops`; each
method states what it trains in :meth:`~adaptertune.methods.registry.Method.step_flops`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..methods import METHODS
from ..methods.flops import LINEARS, StepFlops, ViTGeometry, count_step, inference_flops, vit_geometry

__all__ = [
    "LINEARS",
    "StepFlops",
    "ViTGeometry",
    "count_step",
    "flop_methods",
    "inference_flops",
    "step_flops",
    "vit_geometry",
]


def flop_methods() -> list[str]:
    """Names of the registered methods that have a FLOP formula."""
    probe = ViTGeometry(depth=1, dim=4, mlp_hidden=4, tokens=2, patches=1, patch_dim=3, num_classes=2)
    return [m.name for m in METHODS if m.step_flops(probe, m.resolve(None)) is not None]


def step_flops(geom: ViTGeometry, method: str, options: Any = None) -> StepFlops:
    """Matmul FLOPs of one training step of ``method`` (with ``options``: None, a mapping or its dataclass).

    Raises:
        ConfigError: the method has no FLOP formula, or an option is bad.
    """
    info = METHODS.get(method)
    flops = info.step_flops(geom, info.resolve(options))
    if flops is None:
        raise ConfigError(f"No FLOP formula for method '{method}'; known: {', '.join(flop_methods())}.")
    return flops
