"""Cost of the methods: analytic FLOPs, interleaved step timing, peak memory."""

from .flops import StepFlops, ViTGeometry, step_flops, vit_geometry
from .speed import MethodSpeed, SpeedConfig, SpeedReport, run_speed

__all__ = [
    "MethodSpeed",
    "SpeedConfig",
    "SpeedReport",
    "StepFlops",
    "ViTGeometry",
    "run_speed",
    "step_flops",
    "vit_geometry",
]
