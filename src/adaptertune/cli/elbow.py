"""``adaptertune elbow FILE.csv|RUN_DIR...``: the elbow of every rank sweep in CSVs (the report's results.csv, nested
runs' rank_curve.csv, or any file with ``rank,seed,acc`` columns)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .progress import add_json_option, emit_json, format_table

__all__ = ["HELP", "add_arguments", "cmd_elbow"]


RULES = ("effect", "paired")  # analysis.elbow_effect.RULES (not imported here: it loads numpy)
DELTA_HELP = "1.0"  # analysis.elbow_effect.DEFAULT_DELTA, as the help shows it (tests check they agree)
HELP = "the rank elbow of every sweep in a CSV (smallest rank within delta of the best, paired seeds)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Elbow (--rule effect, the default) = the smallest swept rank shown within --delta points of the best "
        "swept rank: a one-sided lower bound of its paired difference (same seed) to every other rank above "
        "-delta; 'not reached' when the largest rank is shown better than every smaller one by more than delta; "
        "'inconclusive' when no rank is shown within delta (too few seeds). --rule paired: the smallest swept "
        "rank that no larger swept rank beats with a paired gain significantly above 0 (Holm over the "
        "comparisons); 'not reached' when the largest rank still beats the one below it. Reads the report's "
        "results.csv or any CSV with rank, seed and accuracy columns (rank 0 = head only; a nested run's rank 0 is "
        "not, and is left out)."
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
    p.add_argument(
        "--rule",
        choices=list(RULES),
        default="effect",
        help="effect: smallest rank within --delta of the best (default); paired: the paired-significance rule",
    )
    p.add_argument(
        "--delta",
        type=float,
        default=None,
        help=f"effect rule: accuracy points below the best that still count as as good (default {DELTA_HELP}: "
        "about one run's noise)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="effect rule: one-sided level of each bound; paired rule: familywise level of the comparisons",
    )
    p.add_argument("--noise", choices=["pooled", "per-step"], default="pooled")
    p.add_argument(
        "--compare",
        choices=["later", "adjacent"],
        default="later",
        help="paired rule: compare with every larger rank or the next only",
    )
    p.add_argument("--boot", type=int, default=2000, help="paired rule: bootstrap resamples of whole seeds")
    p.add_argument("--level", type=float, default=0.9, help="paired rule: coverage of the bootstrap interval")
    p.add_argument("--seed", type=int, default=0, help="paired rule: bootstrap seed")
    add_json_option(p, "every group's elbow, interval, rule and fits")
    p.set_defaults(func=cmd_elbow)


def cmd_elbow(args: argparse.Namespace) -> int:
    from ..analysis.elbow_table import elbow_rows, is_nested_rank_zero, read_rows
    from ..errors import ConfigError
    from ..runs.rank_curve import rank_curve_path

    group_by = None if args.group_by is None else [c.strip() for c in args.group_by.split(",") if c.strip()]
    if args.rule == "paired" and args.delta is not None:
        raise ConfigError("--delta belongs to the effect-size rule; drop it or use --rule effect.")
    if args.rule == "effect":
        opts = dict(alpha=args.alpha, noise=args.noise)
        if args.delta is not None:
            opts["delta"] = args.delta
    else:
        opts = dict(alpha=args.alpha, compare=args.compare, noise=args.noise, n_boot=args.boot, level=args.level)
        opts["seed"] = args.seed
    rows = [row for path in args.csv for row in read_rows(rank_curve_path(path))]
    table = elbow_rows(rows, group_by=group_by, acc_col=args.acc_col, rule=args.rule, **opts)
    zeros = sum(map(is_nested_rank_zero, rows))
    if zeros:
        print(
            f"note: {zeros} nested runs' rank 0 (adapters off in front of a head trained with them) left out: it is "
            "not a head-only run; add one (method linear-probe) for rank 0\n"
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
        if args.rule == "effect":
            _print_effect(name, r)
            continue
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


def _print_effect(name: str, r: Any) -> None:
    """One sweep's verdict by the effect-size rule, its per-rank bounds and the rule."""
    conf = f"{(1 - r.alpha) * 100:g}%"
    dropped = f"; left out, missing ranks: {', '.join(map(str, r.dropped_seeds))}" if r.dropped_seeds else ""
    print(f"{name}: elbow {r.label} (delta {r.delta:g}; {r.interval_label}; {len(r.seeds)} paired seeds{dropped})")
    rows = [
        {
            "rank": k,
            "mean": f"{m:.2f}",
            "sd": f"{sd:.2f}",
            "vs best mean": f"{g:+.2f}",
            f"lower bound ({conf}) vs best": f"{lo:+.2f}",
            f"within {r.delta:g}": "yes" if ok else "",
        }
        for k, m, sd, g, lo, ok in zip(r.ranks, r.mean_acc, r.std_acc, r.gap, r.lower, r.shown)
    ]
    print(format_table(rows))
    print(f"largest rank vs the best smaller one: lower bound {r.top_gain:+.2f} (not reached when > +{r.delta:g})")
    print(f"rule: {r.rule}\n")
