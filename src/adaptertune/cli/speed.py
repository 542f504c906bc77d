"""``adaptertune speed``: every method's step time, memory and FLOP/s side by side."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from .flags import add_config_flags, run_config
from .progress import add_json_option, emit_json, format_table

__all__ = ["HELP", "add_arguments", "cmd_speed", "speed_table"]


HELP = "compare the methods' train-step time, memory and FLOP/s on one backbone"


def add_arguments(p: argparse.ArgumentParser) -> None:
    # default: test_vit, random init (speed needs no trained weights); any method's options: --set lora.targets=qkv+mlp
    add_config_flags(p, ("backbone",))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--methods", default="head,full,adapter,lora", help="comma list of registered methods")
    p.add_argument("--rank", type=int, default=None, help="the rank of every method that takes one (default: its own)")
    p.add_argument(
        "--placement", default=None, help="the placement of every method that takes one: all, every:K, last:N, 0,5,11"
    )
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of every method per round)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--no-inference", action="store_true", help="skip the inference timing")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument(
        "--tune-malloc",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="CPU: keep freed memory mapped between steps (glibc mallopt; default off, as in train)",
    )
    p.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="side of the matmul that measures the limit (8192 CUDA, 1024 CPU)",
    )
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall time, or CPU time of this process (with --threads 1: ignores time other processes hold the core)",
    )
    add_json_option(p, "the figures")
    p.set_defaults(func=cmd_speed)


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def speed_table(report: dict[str, Any]) -> str:
    rows = []
    for m in report["methods"]:
        lo, hi = m["step_ms_spread"]
        rows.append(
            {
                "method": m.get("label") or m["method"],
                "step ms": f"{m['step_ms']:.1f}",
                "IQR ms": f"{lo:.1f}-{hi:.1f}",
                "img/s": f"{m['images_per_s']:.1f}",
                "x full": _f(m["ratio_to_full"], ".3f"),
                "x lora": _f(m["ratio_to_lora"], ".3f"),
                "trainable": f"{m['trainable_params']:,}",
                "% full params": _f(
                    None if m["params_ratio_to_full"] is None else 100 * m["params_ratio_to_full"], ".2f"
                ),
                "peak MB": _f(m["peak_memory_mb"], ".0f"),
                "mem x full": _f(m["memory_ratio_to_full"], ".2f"),
                "GFLOP/step": _f(m["gflops_per_step"], ".2f"),
                "FLOP x full": _f(m.get("flops_ratio_to_full"), ".3f"),
                "GFLOP/s": _f(m["achieved_gflops"], ".1f"),
                "% matmul": _f(None if m["flops_share"] is None else 100 * m["flops_share"], ".0f"),
                "infer x plain": _f(m["inference_ratio"], ".3f"),
            }
        )
    mach, cfg = report["machine"], report["config"]
    head = (
        f"{cfg['backbone']['name']} {cfg['backbone']['args'] or ''} batch {cfg['batch_size']}, "
        f"{cfg['tokens']} tokens, "
        f"{cfg['steps']} rounds after {cfg['warmup']} warm-up | {mach['device']}, "
        f"{mach['threads']} threads, {mach['clock']} clock, {mach['precision']}, matmul {mach['matmul_size']}^2: "
        f"{mach['matmul_gflops']:.1f} GFLOP/s, malloc tuned: {mach['malloc_tuned']}"
    )
    if mach.get("plain_inference_ms") is not None:
        head += f", plain inference {mach['plain_inference_ms']:.1f} ms"
    return head + "\n" + format_table(rows)


def cmd_speed(args: argparse.Namespace) -> int:
    import torch

    from ..perf import SpeedConfig, run_speed

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
    run = run_config(args, defaults={"backbone": {"name": "test_vit", "pretrained": False}})
    cfg = SpeedConfig(
        backbone=run.backbone,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        batch_size=args.batch_size,
        rank=args.rank,
        placement=args.placement,
        options=run.options,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        precision=args.precision,
        memory=not args.no_memory,
        inference=not args.no_inference,
        compile=args.compile,
        matmul_size=args.matmul_size,
        tune_malloc=args.tune_malloc,
        clock=args.clock,
    )
    report = run_speed(cfg).to_dict()
    print(speed_table(report))
    if args.json:
        emit_json(args.json, report, getattr(args, "json_stream", None))
    return 0
