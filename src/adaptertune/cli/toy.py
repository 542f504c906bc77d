"""``adaptertune toy``: the paper's 2-D experiment, accuracy vs rank with its elbow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import atomic_write_text, ensure_output_dir
from .progress import format_table

__all__ = ["HELP", "add_arguments", "cmd_toy"]


HELP = "2-D toy: frozen moons feature map, rank-r zero-init adapters learn circles (accuracy vs rank)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ranks", default="1,2,4,8,16,32", help="comma-separated ranks in 1..32")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument("--steps", type=int, default=500, help="full-batch Adam steps per training")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--boot", type=int, default=500, help="bootstrap resamples of the elbow interval")
    p.add_argument("--out", default="runs/toy", metavar="DIR", help="writes toy.json and toy.png here")
    p.set_defaults(func=cmd_toy)


def cmd_toy(args: argparse.Namespace) -> int:
    from ..analysis.toy import plot_toy, run_toy
    from ..errors import ConfigError

    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--ranks must be comma-separated integers in 1..32, got '{args.ranks}'.") from None
    if args.seeds < 1 or args.steps < 1:
        raise ConfigError("--seeds and --steps must be positive integers.")
    result = run_toy(ranks, range(args.seeds), args.steps, args.lr, args.boot)
    rows = [
        {
            "rank": "head only" if t["rank"] == 0 else t["rank"],
            "test acc mean (%)": f"{t['mean']:.2f}",
            "std": f"{t['std']:.2f}",
            "per seed": " ".join(f"{a:.1f}" for a in t["per_seed"]),
        }
        for t in result.table()
    ]
    print(format_table(rows))
    if result.elbow is not None:
        e = result.elbow
        best = e.best_fit
        print(
            f"elbow: r = {e.label} (interval {e.interval_label}, {e.level:.0%} bootstrap over whole seeds); "
            f"rule: {e.rule}" + (f"; best-weighted fit {best.family} ({best.weight:.2f})" if best is not None else "")
        )
    else:
        print(f"elbow: not fitted ({result.elbow_error})")
    print("not a re-run of the reference toy script; it differs in:")
    for d in result.setup["differences_from_reference_code"]:
        print(f"  - {d}")
    out = Path(args.out)
    atomic_write_text(ensure_output_dir(out) / "toy.json", json.dumps(result.to_dict(), indent=2))
    plot_toy(result, out / "toy.png")
    print(f"wrote {out / 'toy.json'} and {out / 'toy.png'} ({result.seconds:.1f} s)")
    return 0
