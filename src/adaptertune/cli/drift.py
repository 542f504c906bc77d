"""``adaptertune drift``: representation drift over the first epoch, per adapter init."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import atomic_write_text, ensure_output_dir
from .flags import add_config_flags, run_config
from .progress import format_table

__all__ = ["HELP", "add_arguments", "cmd_drift"]


HELP = "representation drift (CKA, relative change) and loss of the first steps, per adapter init"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, ("backbone", "data"))
    p.add_argument("--inits", default="zero,small,random", help="comma-separated: zero, small, random")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--placement", default="all")
    p.add_argument("--lr", type=float, default=1e-3, help="constant AdamW lr (no warm-up)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="stop after N steps (default: one epoch)")
    p.add_argument("--every", type=int, default=5, help="measure the features every N steps")
    p.add_argument("--probe", type=int, default=64, help="size of the fixed probe batch (test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/drift", metavar="DIR", help="writes drift.json and drift.png here")
    p.set_defaults(func=cmd_drift)


def cmd_drift(args: argparse.Namespace) -> int:
    from ..analysis.drift import drift_from_config, plot_drift
    from ..errors import ConfigError

    if args.every < 1 or (args.steps is not None and args.steps < 1):
        raise ConfigError("--every and --steps must be positive integers.")
    cfg = run_config(args, required=("backbone.name", "data.name"))
    backbone, data = cfg.backbone, cfg.data
    result = drift_from_config(
        backbone,
        data,
        [i.strip() for i in args.inits.split(",") if i.strip()],
        args.rank,
        args.placement,
        args.lr,
        args.weight_decay,
        args.batch_size,
        args.steps,
        args.every,
        args.probe,
        args.seed,
        args.device,
    )
    out = Path(args.out)
    atomic_write_text(ensure_output_dir(out) / "drift.json", json.dumps(result.to_dict(), indent=2))
    png = plot_drift(result, out / "drift.png")
    rows = []
    for c in result.curves:
        k = min(range(len(c.steps)), key=lambda i: abs(c.steps[i] - 10))
        rows.append(
            {
                "init": c.init,
                "CKA step 0": f"{c.cka[0]:.4f}",
                f"CKA step {c.steps[k]}": f"{c.cka[k]:.4f}",
                f"CKA step {c.steps[-1]}": f"{c.cka[-1]:.4f}",
                "min CKA": f"{min(c.cka):.4f}",
                "rel change step 0": f"{c.rel_change[0]:.4f}",
                "rel change end": f"{c.rel_change[-1]:.4f}",
                "loss step 1": f"{c.losses[0]:.3f}" if c.losses else "-",
                "loss last": f"{c.losses[-1]:.3f}" if c.losses else "-",
                "seconds": f"{c.seconds:.1f}",
            }
        )
    print(format_table(rows))
    print(result.setup["zero_init"])
    print(f"wrote {out / 'drift.json'} and {png}")
    return 0
