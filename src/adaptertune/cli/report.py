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
    print_report(build_report(args.results_dir, out, split_protocols=args.split_protocols))
    return 0
