"""``adaptertune bench``: the main job. Runs a preset's sweep, then the report, and prints the table."""

from __future__ import annotations

import argparse
from pathlib import Path

from .sweep import ProgressPrinter, add_sweep_options, executor_from_args, load_any_spec, run_cli_sweep

__all__ = ["HELP", "add_arguments"]


HELP = "run a preset (default: quick) and report it; prints the table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="quick",
        help="preset name (adaptertune list presets) or sweep spec YAML (default: quick)",
    )
    p.add_argument("--out-dir", default=None, metavar="DIR", help="runs go here, the report in DIR/report")
    p.add_argument("--split-protocols", action="store_true", help="separate cells for different protocols")
    add_sweep_options(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..sweeps.bench import run_bench
    from .report import print_report

    spec = load_any_spec(args.preset, None, args.set)
    out_dir = Path(args.out_dir or Path("runs") / f"bench-{spec.name}")
    if args.dry_run:
        run_cli_sweep(spec, out_dir, args)
        return 0
    executor = executor_from_args(args)  # before the preset's prepare step: a missing extra stops here
    spec = load_any_spec(args.preset, out_dir, args.set)
    changed = f" (with {', '.join(args.set)})" if args.set else ""
    print(f"bench {spec.name}: {spec.meta.get('description', '')}{changed}")
    result = run_bench(spec, out_dir, executor, ProgressPrinter(), split_protocols=args.split_protocols)
    s = result.sweep
    print(f"\nsweep: {s.count('success')} ran, {s.count('failed')} failed ({result.sweep_seconds:.0f}s)")
    for r in s.results:
        if r.status == "failed":
            print(f"  failed: {r.name}: {r.error}")
    if result.report is None:
        print("no finished run: no report")
        return 1
    print()
    print_report(result.report)
    print(
        f"bench {spec.name}: {result.seconds:.0f}s in total (report {result.report_seconds:.0f}s); runs in {out_dir}"
    )
    return 1 if s.count("failed") else 0
