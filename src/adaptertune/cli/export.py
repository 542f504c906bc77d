"""``adaptertune export RUN_DIR --format {pt,onnx,timm,peft}``: a standalone model file, or a timm / PEFT folder."""

from __future__ import annotations

import argparse

from .flags import add_rank_flag
from .progress import format_table

__all__ = ["FORMATS", "HELP", "add_arguments", "cmd_export"]

FORMATS = ("pt", "onnx", "timm", "peft")  # export.EXPORT_FORMATS, spelled here so the CLI starts without torch


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_run

    r = export_run(args.run_dir, args.format, args.out, atol=args.atol, rank=args.rank)
    print(
        format_table(
            [
                {
                    "file": r.path,
                    "format": r.format,
                    "MB": f"{r.bytes / 2**20:.2f}",
                    "max |logit diff|": f"{r.max_abs_diff:.2e}",
                    "merged": "yes" if r.merged else "-",
                }
            ]
        )
    )
    print(f"model card: {r.sidecar}" if r.format in ("timm", "peft") else f"classes and preprocessing: {r.sidecar}")
    return 0


HELP = (
    "write a finished run as a standalone .pt (torch.export) or ONNX model, or a timm / PEFT folder with a model card"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--format", choices=FORMATS, default="pt")
    p.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="output file (pt, onnx; default RUN_DIR/model.FORMAT) or folder (timm, peft; RUN_DIR/export-FORMAT)",
    )
    add_rank_flag(p)
    p.add_argument("--atol", type=float, default=1e-4, help="max |logit difference| allowed vs the trained model")
    p.set_defaults(func=cmd_export)
