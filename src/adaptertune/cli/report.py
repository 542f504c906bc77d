"""``adaptertune report RESULTS_DIR --out DIR``: multi-seed tables, plots and report.html from run folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["HELP", "add_arguments", "print_report"]


HELP = "aggregate run folders over seeds: tables, plots, report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", help="folder holding run folders (any depth)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default RESULTS_DIR/report)")
    p.add_argument(
        "--split-protocols",
        action="store_true",
        help="show runs with different protocols as separate cells instead of refusing",
    )
    p.add_argument(
        "--elbow-rule",
        choices=["effect", "paired"],
        default="effect",
        help="rule of the rank-elbow section: effect (smallest rank within --elbow-delta of the best, default) "
        "or paired (paired significance of the gains); see `adaptertune elbow --help`",
    )
    p.add_argument(
        "--elbow-delta", type=float, default=None, help="effect rule: points below the best still as good (1.0)"
    )
    p.set_defaults(func=cmd_report)


def print_report(report) -> None:
    """The accuracy table, the gain summary, the runs and images skipped and the files written."""
    from ..reports.builder import skipped_counts

    print(report.table_md)
    for line in report.gain_lines:
        print(line)
    for line in report.warnings:
        print(line, file=sys.stderr)
    for r in report.problems:
        print(f"run skipped: {r.run} ({r.status}): {r.error}", file=sys.stderr)
    if report.problems or any(r.unreadable for r in report.records):
        print(skipped_counts(report.records), file=sys.stderr)
    print(f"report: {report.out_dir / 'report.html'} ({len(report.files)} files)")


def cmd_report(args: argparse.Namespace) -> int:
    from ..reports.builder import build_report

    out = Path(args.out) if args.out else Path(args.results_dir) / "report"
    elbow = {"rule": args.elbow_rule, "delta": args.elbow_delta}
    print_report(build_report(args.results_dir, out, split_protocols=args.split_protocols, elbow=elbow))
    return 0
