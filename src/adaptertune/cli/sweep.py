"""``adaptertune sweep SPEC``: run a grid of configs, one run folder per point, skipping finished points."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..atomic import check_output_dir
from ..errors import ConfigError
from .progress import TqdmProgress, format_table

__all__ = [
    "HELP",
    "ProgressPrinter",
    "add_arguments",
    "executor_from_args",
    "load_any_spec",
    "make_cli_executor",
    "print_plan",
]


HELP = "run a grid of configs (a sweep spec YAML or a preset name)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="sweep spec YAML, or a preset name (see: adaptertune list presets)")
    p.add_argument("--results-dir", default=None, metavar="DIR", help="where the run folders go (default runs/NAME)")
    add_sweep_options(p)
    p.set_defaults(func=cmd_sweep)


def add_sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="parallel runs (one per GPU when there are GPUs)")
    p.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="local processes, or one Ray task per point"
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--dry-run", action="store_true", help="list the points and their state; run nothing")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key (repeatable)"
    )
    p.add_argument("--quiet", action="store_true", help="no per-run progress bar")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per run (default: torch's; 1 is fastest on a busy shared CPU)",
    )


def load_any_spec(spec: str, out_dir: Path | None, overrides: list[str]) -> Any:
    """A spec from a YAML path or a preset name, with ``--set`` overrides applied to its base."""
    from ..config_keys import apply_overrides
    from ..sweeps import PRESETS, load_preset, load_spec

    if Path(spec).is_file():
        s = load_spec(spec)
    elif spec in PRESETS:
        s = load_preset(spec, out_dir)
    else:
        raise ConfigError(
            f"'{spec}' is neither a sweep spec file nor a preset; presets: {', '.join(PRESETS.names())}."
        )
    s.base = apply_overrides(s.base, overrides)
    return s


def make_cli_executor(workers: int, quiet: bool, threads: int | None = None) -> Any:
    import torch

    from ..sweeps import make_executor

    gpus = list(range(torch.cuda.device_count()))
    if gpus and workers > len(gpus):
        raise ConfigError(f"--workers {workers} is more than the {len(gpus)} GPUs here (one worker per GPU).")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}.")
        torch.set_num_threads(threads)
    bars = None if quiet or workers > 1 else (lambda job: [TqdmProgress(desc=job.name[:40])])
    return make_executor(workers, gpus, bars, threads)


def executor_from_args(args: argparse.Namespace) -> Any:
    """The executor ``--executor`` names: local processes (``--workers``, ``--threads``) or Ray (``--address``).

    Raises:
        ImportError: ``--executor ray`` without ray installed (the message says how to install it).
    """
    if args.executor == "ray":
        from ..sweeps.ray_executor import RayExecutor

        return RayExecutor(address=args.address)
    if args.address is not None:
        raise ConfigError("--address is the Ray cluster's address: use it with --executor ray.")
    return make_cli_executor(args.workers, args.quiet, args.threads)


def print_plan(spec: Any, planned: list[Any], results_dir: Path) -> None:
    meta = spec.meta
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.state.value] = counts.get(p.state.value, 0) + 1
    print(f"sweep {spec.name}: {len(planned)} runs under {results_dir}")
    if meta.get("description"):
        print(f"  {meta['description']}")
    facts = [f"{k.replace('_', ' ')}: {v}" for k, v in meta.items() if k != "description"]
    if facts:
        print("  " + "; ".join(facts))
    points = sum(not p.tuning for p in planned)  # the grid's points; its tuning runs are listed first
    if "runs" in meta and meta["runs"] != points:
        print(f"  warning: meta says {meta['runs']} runs, the grid has {points}", file=sys.stderr)
    print("  " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    rows = [
        {"#": i, "point": p.point.name, "state": p.state.value, "detail": p.detail[:100]}
        for i, p in enumerate(planned, 1)
    ]
    print(format_table(rows))


class ProgressPrinter:
    """One line when a point starts and one when it ends (accuracy or error, time, elapsed)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, event: Any) -> None:
        tag = f"[{event.index}/{event.total}]"
        elapsed = f"{time.perf_counter() - self.t0:5.0f}s"
        if event.kind == "start":
            print(f"{tag} {elapsed} start {event.job.name}", file=sys.stderr, flush=True)
            return
        r = event.result
        if r.status == "success":
            what = f"top-1 {r.test_acc:.2f}%" if r.test_acc is not None else f"val top-1 {r.val_acc:.2f}%"
        else:
            what = r.error if r.status == "skipped" else f"FAILED {r.error}"
        print(
            f"{tag} {elapsed} {r.status:7s} {event.job.name}: {what} ({r.seconds:.0f}s)", file=sys.stderr, flush=True
        )


def run_cli_sweep(spec: Any, results_dir: Path, args: argparse.Namespace) -> Any:
    """Plan, print the plan, and (unless --dry-run) run; returns the SweepResult or None for a dry run."""
    from ..runs import RunStatus
    from ..sweeps import plan_sweep, run_sweep

    planned = plan_sweep(spec, results_dir)
    if args.dry_run:
        print_plan(spec, planned, results_dir)
        return None
    todo = sum(p.state is not RunStatus.SUCCESS for p in planned)
    print(f"sweep {spec.name}: {len(planned)} points, {len(planned) - todo} done, {todo} to run -> {results_dir}")
    executor = executor_from_args(args)
    result = run_sweep(spec, results_dir, executor, ProgressPrinter(), planned=planned)
    print(
        f"sweep {spec.name}: {result.count('success')} ran, {result.count('failed')} failed, "
        f"{result.count('skipped')} left to other processes, {len(planned) - todo} already done "
        f"({result.seconds:.0f}s)"
    )
    for r in result.results:
        if r.status == "failed":
            print(f"  failed: {r.name}: {r.error}")
    return result


def cmd_sweep(args: argparse.Namespace) -> int:
    spec = load_any_spec(args.spec, None, args.set)
    results_dir = check_output_dir(Path(args.results_dir or Path("runs") / spec.name))
    if not args.dry_run:  # a preset's prepare step (e.g. generated data) writes files: not on a dry run
        spec = load_any_spec(args.spec, results_dir, args.set)
    result = run_cli_sweep(spec, results_dir, args)
    return 1 if result is not None and result.count("failed") else 0
