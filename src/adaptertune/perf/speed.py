"""Side-by-side cost of the transfer methods on one backbone, batch and input size.

All methods run in one process on copies of the same backbone. After ``warmup`` rounds, every round times
one training step (forward, cross-entropy, backward, grad-norm clip, AdamW step, ``zero_grad``: what
:func:`adaptertune.engine.loop.fit` does per batch) of each method, plus a square matmul that gives the
machine's achievable FLOP/s in the same precision. The order is rotated each round (A B C, B C A, ...), so
load from other processes hits every method alike; ratios to ``full`` are medians of per-round ratios,
which are much steadier than absolute times on a shared machine. Inference (eval forward under
``inference_mode``) is timed the same way against the plain backbone.

Every name is a registered method, built as ``train --method NAME`` builds it, with its options section
(``options``: ``{"lora": {"targets": "qkv+mlp"}}``) over the shorthands ``rank`` and ``placement`` where the
method takes them (its defaults otherwise). ``lora`` (PEFT's
LoRA, injected by the registered method: ``lora_alpha = alpha * rank`` with alpha 1, head trainable) is also
the reference of the ``ratio_to_lora`` column.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import BackboneConfig
from ..engine.device import autocast_context, resolve_device, resolve_precision
from ..errors import ConfigError
from ..methods import METHODS
from ..methods.flops import vit_geometry
from ..vit import trainable_parameters
from .cpu import tune_malloc
from .memory import measure_peak_memory
from .step import REFERENCE, build_for_speed, make_batch, make_train_step, speed_options

__all__ = [
    "MethodSpeed",
    "SpeedConfig",
    "SpeedReport",
    "matmul_gflops",
    "matmul_reference",
    "run_speed",
]

_logger = logging.getLogger(__name__)


@dataclass
class SpeedConfig:
    """What to compare.

    Args:
        backbone: backbone (always built with a seeded random init: the cost does not depend on weights).
        methods: registered method names.
        batch_size: images per step.
        rank: shorthand: the rank of every timed method that takes one (None: each method's default).
        placement: shorthand: the placement (all, last:N, ...) of every timed method that takes one.
        options: options sections by method name, as ``train`` reads them (``{"lora": {"targets":
            "qkv+mlp"}}``; CLI ``--set lora.targets=qkv+mlp``); they win over the shorthands.
        steps: timed rounds; warmup: untimed rounds before them.
        device: auto, cpu, cuda, cuda:N.
        precision: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16, fp16.
        memory: measure peak memory (one child process per method).
        inference: time inference against the plain backbone.
        compile: wrap every model in ``torch.compile``.
        matmul_size: side of the square matmul that measures the FLOP/s limit (None: 8192 on CUDA, large
            enough to reach a GPU's peak rather than its launch overhead; 1024 on CPU).
        matmul_repeats: matmuls per timed call (None: 20 on CUDA, 1 on CPU).
        num_classes: head size.
        tune_malloc: on CPU, keep freed memory mapped between steps (:func:`adaptertune.perf.cpu.tune_malloc`);
            off by default, as in ``adaptertune train``.
        clock: ``wall`` (elapsed time) or ``cpu`` (this process's CPU time: with one thread on a shared CPU it
            leaves out the time other processes hold the core; equal to wall time on an idle machine).
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="test_vit", pretrained=False))
    methods: list[str] = field(default_factory=lambda: ["head", "full", "adapter", "lora"])
    batch_size: int = 32
    rank: int | None = None
    placement: str | list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    steps: int = 10
    warmup: int = 3
    device: str = "auto"
    precision: str = "auto"
    memory: bool = True
    inference: bool = True
    compile: bool = False
    matmul_size: int | None = None
    matmul_repeats: int | None = None
    num_classes: int = 10
    tune_malloc: bool = False
    clock: str = "wall"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("Give at least one method to measure, e.g. head,full,adapter,lora.")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"A method is listed twice in {self.methods}.")
        for name in ("batch_size", "rank", "steps", "matmul_size", "matmul_repeats", "num_classes"):
            value = getattr(self, name)
            optional = name in ("rank", "matmul_size", "matmul_repeats")
            if (value is not None or not optional) and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"`clock` must be wall or cpu, got {self.clock!r}.")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"`warmup` must be an integer >= 0, got {self.warmup!r}.")
        for m in self.methods:
            self.method_options(m)  # unknown method, bad option

    def method_options(self, method: str) -> Any:
        """The options object ``method`` is timed with (:func:`~adaptertune.perf.step.speed_options`)."""
        return speed_options(method, self.options, self.rank, self.placement)


@dataclass
class MethodSpeed:
    """Figures of one method (times in ms; ratios are medians of per-round ratios)."""

    method: str
    label: str  # the method with the options it was timed with (Method.label: ``lora r=16 qkv+mlp``)
    step_ms: float
    step_ms_spread: tuple[float, float]  # inter-quartile range
    step_ms_min: float
    step_ms_max: float
    images_per_s: float
    trainable_params: int
    total_params: int
    params_ratio_to_full: float | None
    ratio_to_full: float | None  # step time / full's
    ratio_to_lora: float | None  # step time / the lora method's
    gflops_per_step: float | None
    flops_ratio_to_full: float | None  # the step-time ratio a method would have at full's FLOP/s
    achieved_gflops: float | None
    flops_share: float | None  # achieved FLOP/s / matmul FLOP/s
    peak_memory_mb: float | None
    memory_ratio_to_full: float | None
    inference_ms: float | None
    inference_ratio: float | None  # eval forward time / the plain backbone's


@dataclass
class SpeedReport:
    machine: dict[str, Any]
    config: dict[str, Any]
    methods: list[MethodSpeed]

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "config": self.config, "methods": [asdict(m) for m in self.methods]}


def _timed(fn: Callable[[], Any], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    """Milliseconds of one call (CUDA: synchronized before both clock reads)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (clock() - t0) * 1e3


def matmul_reference(device_type: str) -> tuple[int, int]:
    """(side, repeats) of the reference matmul: 20 x 8192^2 on CUDA (~1 TFLOP each: a GPU at its peak, not
    at its launch overhead), one 1024^2 on CPU. Pure."""
    return (8192, 20) if device_type == "cuda" else (1024, 1)


def matmul_gflops(n: int, precision: str, device: torch.device, repeats: int = 1) -> Callable[[], None]:
    """``repeats`` square ``n x n`` matmuls in the step's precision (2 n^3 FLOPs each)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(repeats):
            torch.mm(a, b, out=out)

    return run


def _interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int, device: torch.device, clock: str = "wall"
) -> dict:
    """Per-name lists of times (ms) over ``rounds`` rounds, order rotated every round."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t = _timed(fns[n], device, time.process_time if clock == "cpu" else time.perf_counter)
            if r >= warmup:
                times[n].append(t)
    return times


def _quartiles(ts: list[float]) -> tuple[float, float, float]:
    if len(ts) < 2:
        return ts[0], ts[0], ts[0]
    q1, q2, q3 = statistics.quantiles(ts, n=4, method="inclusive")
    return q1, q2, q3


def _ratio(times: dict[str, list[float]], name: str, ref: str) -> float | None:
    if ref not in times or name not in times:
        return None
    return statistics.median(a / b for a, b in zip(times[name], times[ref]))


# ---------------------------------------------------------------- the comparison
def run_speed(cfg: SpeedConfig) -> SpeedReport:
    """Measure every method of ``cfg`` side by side. See the module docstring."""
    from ..backbones import create_backbone

    device = resolve_device(cfg.device)
    if cfg.clock == "cpu" and device.type == "cuda":
        raise ConfigError("`clock cpu` measures CPU work; on CUDA use the wall clock.")
    precision = resolve_precision(cfg.precision, device)
    malloc_tuned = device.type == "cpu" and cfg.tune_malloc and tune_malloc()
    built = create_backbone(cfg.backbone, cfg.num_classes, seed=0)
    plain = built.model.to(device).eval()
    geom = vit_geometry(plain)
    options = {m: cfg.method_options(m) for m in cfg.methods}
    x, y = make_batch(plain, cfg.batch_size, cfg.num_classes, device)
    mm_size, mm_repeats = matmul_reference(device.type)
    mm_size, mm_repeats = cfg.matmul_size or mm_size, cfg.matmul_repeats or mm_repeats
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    models: dict[str, nn.Module] = {}
    steps: dict[str, Callable[[], None]] = {"matmul": matmul_gflops(mm_size, precision, device, mm_repeats)}
    for m in cfg.methods:
        torch.manual_seed(0)
        model = build_for_speed(m, copy.deepcopy(plain), options[m]).to(device)
        models[m] = model.train()
        steps[m] = make_train_step(torch.compile(model) if cfg.compile else model, x, y, precision, device)
    _logger.info("timing %d rounds (+%d warm-up) of %s", cfg.steps, cfg.warmup, ", ".join(steps))
    times = _interleaved(steps, cfg.steps, cfg.warmup, device, cfg.clock)
    mm_gflops = 2 * mm_size**3 * mm_repeats / (statistics.median(times["matmul"]) * 1e6)

    infer: dict[str, list[float]] = {}
    if cfg.inference:
        fwd: dict[str, Callable[[], Any]] = {}
        for name, model in {"plain": plain, **models}.items():
            model.eval()
            fwd[name] = _inference_fn(torch.compile(model) if cfg.compile else model, x, precision, device)
        infer = _interleaved(fwd, cfg.steps, cfg.warmup, device, cfg.clock)

    counts = {m: trainable_parameters(models[m]) for m in cfg.methods}
    results = []
    for m in cfg.methods:
        q1, med, q3 = _quartiles(times[m])
        formula = METHODS.get(m).step_flops(geom, options[m])
        flops = formula.scaled(cfg.batch_size).total if formula else None
        peak = _peak_memory(cfg, m, options[m], device, precision) if cfg.memory else None
        results.append(
            MethodSpeed(
                method=m,
                label=METHODS.get(m).label(options[m]),
                step_ms=med,
                step_ms_spread=(q1, q3),
                step_ms_min=min(times[m]),
                step_ms_max=max(times[m]),
                images_per_s=cfg.batch_size / (med / 1e3),
                trainable_params=counts[m].trainable,
                total_params=counts[m].total,
                params_ratio_to_full=counts[m].trainable / counts["full"].trainable if "full" in counts else None,
                ratio_to_full=_ratio(times, m, "full"),
                ratio_to_lora=_ratio(times, m, REFERENCE),
                gflops_per_step=flops / 1e9 if flops else None,
                flops_ratio_to_full=None,
                achieved_gflops=flops / (med * 1e6) if flops else None,
                flops_share=flops / (med * 1e6) / mm_gflops if flops else None,
                peak_memory_mb=peak,
                memory_ratio_to_full=None,
                inference_ms=statistics.median(infer[m]) if infer else None,
                inference_ratio=_ratio(infer, m, "plain") if infer else None,
            )
        )
    full_mem = next((r.peak_memory_mb for r in results if r.method == "full"), None)
    full_flops = next((r.gflops_per_step for r in results if r.method == "full"), None)
    for r in results:
        if r.gflops_per_step is not None and full_flops:
            r.flops_ratio_to_full = r.gflops_per_step / full_flops
        if r.peak_memory_mb is not None and full_mem:
            r.memory_ratio_to_full = r.peak_memory_mb / full_mem
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "matmul_gflops": mm_gflops,
        "matmul_size": mm_size,
        "matmul_repeats": mm_repeats,
        # this process holds every method's model at once; per-method peaks come from `peak_memory_mb`
        "max_memory_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "max_memory_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None,
        "malloc_tuned": malloc_tuned,
        "clock": cfg.clock,
        "precision": precision,
        "torch": torch.__version__,
        "plain_inference_ms": statistics.median(infer["plain"]) if infer else None,
    }
    config = {
        **asdict(cfg),
        "backbone": asdict(cfg.backbone),
        "options": {m: asdict(o) for m, o in options.items() if o is not None},  # as timed, defaults filled
        "tokens": geom.tokens,
    }
    return SpeedReport(machine, config, results)


def _inference_fn(model: nn.Module, x: torch.Tensor, precision: str, device: torch.device) -> Callable[[], Any]:
    def fwd() -> torch.Tensor:
        with torch.inference_mode(), autocast_context(precision, device):
            return model(x)

    return fwd


def _peak_memory(cfg: SpeedConfig, method: str, options: Any, device: torch.device, precision: str) -> float:
    spec = {
        "backbone": cfg.backbone.name,
        "backbone_args": cfg.backbone.args,
        "method": method,
        "options": asdict(options) if options is not None else None,
        "batch_size": cfg.batch_size,
        "num_classes": cfg.num_classes,
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "steps": 2,
        "tune_malloc": cfg.tune_malloc,
    }
    return measure_peak_memory(spec)
