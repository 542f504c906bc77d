"""Cost of the methods: interleaved step timing and peak memory (analytic FLOPs: :mod:`adaptertune.methods.flops`)."""

from .speed import MethodSpeed, SpeedConfig, SpeedReport, run_speed

__all__ = ["MethodSpeed", "SpeedConfig", "SpeedReport", "run_speed"]
