"""Sweeps: grid specs, planning and running points (executors, locks), the presets and the bench job."""

from .executors import (
    Executor,
    InProcessExecutor,
    LocalExecutor,
    PointEvent,
    PointJob,
    PointResult,
    make_executor,
    run_point,
)
from .presets import PRESETS, PresetInfo, configs_dir, load_preset, make_demo_folder, register_preset
from .runner import PlannedPoint, SweepResult, plan_sweep, run_sweep, validate_config
from .sweep import SweepPoint, SweepSpec, expand_grid, load_spec, point_name

__all__ = [
    "PRESETS",
    "Executor",
    "InProcessExecutor",
    "LocalExecutor",
    "PlannedPoint",
    "PointEvent",
    "PointJob",
    "PointResult",
    "PresetInfo",
    "SweepPoint",
    "SweepResult",
    "SweepSpec",
    "configs_dir",
    "expand_grid",
    "load_preset",
    "load_spec",
    "make_demo_folder",
    "make_executor",
    "plan_sweep",
    "point_name",
    "register_preset",
    "run_point",
    "run_sweep",
    "validate_config",
]
