"""``adaptertune elbow FILE.csv|RUN_DIR...``: the elbow of every rank sweep in CSVs (the report's results.csv, nested
runs' rank_curve.csv, or any file with ``rank,seed,acc`` columns)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .progress import add_json_option, emit_json, format_table

__all__ = ["HELP", "add_arguments", "cmd_elbow"]


HELP = "the rank elbow of every sweep in a CSV (paired seeds, bootstrap interval, curve fits)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Elbow = the smallest swept rank that no larger swept rank beats with a paired gain "
        "(same seed) significantly above 0 (Holm over the comparisons); 'not reached' when the largest rank "
        "still beats the one below it. Reads the report's results.csv or any CSV with rank, seed and accuracy "
        "columns."
    )
    p.add_argument(
        "csv",
        nargs="+",
        metavar="FILE.csv|RUN_DIR",
        help="CSV files, or nested runs' folders (their rank_curve.csv); the rows of all are read together",
    )
    p.add_argument(
        "--group-by",
        default=None,
        metavar="COLS",
        help="comma-separated columns that define one sweep (default: those of dataset, backbone, method, "
        "variant, setup_id present); '' for one sweep",
    )
    p.add_argument("--acc-col", default=None, help="accuracy column (default: test_acc if present, else acc)")
    p.add_argument("--alpha", type=float, default=0.05, help="familywise level of the paired comparisons")
    p.add_argument(
        "--compare",
        choices=["later", "adjacent"],
        default="later",
        help="compare with every larger rank or the next only",
    )
    p.add_argument("--noise", choices=["pooled", "per-step"], default="pooled")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of whole seeds")
    p.add_argument("--level", type=float, default=0.9, help="coverage of the bootstrap interval")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_json_option(p, "every group's elbow, interval, rule and fits")
    p.set_defaults(func=cmd_elbow)


def cmd_elbow(args: argparse.Namespace) -> int:
    from ..analysis.elbow_table import elbow_rows, read_rows
    from ..runs.rank_curve import rank_curve_path

    group_by = None if args.group_by is None else [c.strip() for c in args.group_by.split(",") if c.strip()]
    table = elbow_rows(
        [row for path in args.csv for row in read_rows(rank_curve_path(path))],
        group_by=group_by,
        acc_col=args.acc_col,
        alpha=args.alpha,
        compare=args.compare,
        noise=args.noise,
        n_boot=args.boot,
        level=args.level,
        seed=args.seed,
    )
    if all(row.result is None for row in table):
        from ..errors import DataError

        raise DataError(f"No sweep in {', '.join(args.csv)} has an elbow: {table[0].reason}")
    for row in table:
        name = ", ".join(f"{k}={v}" for k, v in row.group.items()) or Path(args.csv[0]).name
        if row.result is None:
            print(f"{name}: {row.reason}\n")
            continue
        r = row.result
        print(
            f"{name}: elbow {r.label}, {r.level:.0%} interval {r.interval_label} ({len(r.seeds)} paired seeds"
            + (f"; left out, missing ranks: {', '.join(map(str, r.dropped_seeds))}" if r.dropped_seeds else "")
            + ")"
        )
        steps = [
            {
                "ranks": f"{t.lo}->{t.hi}",
                "paired gain": f"{t.gain:+.2f}",
                "lower bound": f"{t.lower:+.2f}",
                "p (Holm)": f"{t.p_holm:.3f}",
                "significant": "yes" if t.significant else "",
            }
            for t in r.steps
        ]
        print(format_table(steps))
        d = r.deciding
        if d is not None:
            print(
                f"set by: {d.lo} -> {d.hi} paired gain {d.gain:+.2f}, "
                f"lower bound {d.lower:+.2f} (Holm p {d.p_holm:.3g})"
            )
        else:
            print("set by: no comparison is significant (the smallest swept rank)")
        fits = [
            {
                "fit": f.family,
                "weight": f"{f.weight:.2f}",
                "elbow": f.to_dict()["elbow"],
                "parameters": f.summary().split(" ", 1)[1],
            }
            for f in sorted(r.fits, key=lambda f: -f.weight)
        ]
        print(format_table(fits))
        print(f"rule: {r.rule}\n")
    if args.json:
        emit_json(args.json, [row.to_dict() for row in table], getattr(args, "json_stream", None))
    return 0
