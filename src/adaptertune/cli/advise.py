"""``adaptertune advise-rank``: advise an adapter rank before any training.

Default: the directions the true labels create in the gradient beyond a label-permutation null
(``analysis.advise_null``), or "head-only may suffice". ``--permutations 0``: the older captured-energy rule
(``analysis.advise``), which carries little task information (its curve barely moves with permuted labels).
"""

from __future__ import annotations

import argparse
from typing import Any

from .flags import add_config_flags, run_config
from .progress import add_json_option, emit_json, format_table

__all__ = ["HELP", "add_arguments", "cmd_advise_rank"]

# What the rank-advice validation measured: five of its six tasks finished (benchmarks/rank_validation.py;
# README "Rank advice, validated")
VALIDATION = (
    "validation: on five offline tasks (DINOv2-S/14, 56 px, 512 images) the null-tested advice was further from the "
    "measured elbows than a constant rank and the energy rule; use any advice as a starting point for a short rank "
    "sweep only"
)


HELP = "advise an adapter rank from the gradient directions the task creates beyond a label-permutation null"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Fit a cross-fitted head on frozen features of --images training images, push its held-out "
        "gradient back to each placed block's output tokens and count the directions where the true labels put "
        "more of it than --quantile of --permutations random relabellings (median over blocks); no such direction: "
        "'head-only may suffice'. --permutations 0: the older energy rule (smallest r whose captured energy of the "
        "gradient spectrum reaches --threshold), which barely depends on the labels."
    )
    add_config_flags(p, ("backbone", "data"))
    p.add_argument("--placement", default="all", help="all, every:K, first:N, last:N or indices 0,5,11")
    p.add_argument("--batches", type=int, default=4, metavar="K", help="training batches to look at")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threshold", type=float, default=0.9, help="share of the signal energy to capture")
    p.add_argument("--signal", choices=["output", "update"], default="output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--null-check",
        action="store_true",
        help="also run the pass with the labels permuted: how much of the spectrum is the task's (twice the cost)",
    )
    p.add_argument("--permutations", type=int, default=20, help="label permutations of the null (0: energy rule)")
    p.add_argument("--quantile", type=float, default=0.95, help="a direction counts above this quantile of the null")
    p.add_argument("--images", type=int, default=1024, help="training images for the head fits (null test)")
    p.add_argument("--grad-images", type=int, default=128, help="images of the gradient pass (null test)")
    add_json_option(p, "the full advice")
    p.set_defaults(func=cmd_advise_rank)


def _print_null(advice: Any, total: float) -> None:
    counts = " ".join(f"{b}:{c}" for b, c in advice.block_counts.items())
    if advice.advised_rank is None:
        print(f"advised rank: none ({advice.verdict})")
    else:
        print(
            f"advised rank: {advice.advised_rank}  ({advice.adapter_params:,} adapter parameters on "
            f"{len(advice.blocks)} blocks of width {advice.width})"
        )
    print(f"reason: {advice.reason}")
    print(
        f"null: {advice.permutations} label permutations; head on {advice.n_images} images (2 folds, L2 "
        f"{advice.head_l2:g}): held-out loss {advice.head_heldout_loss:.3f} (accuracy {advice.head_heldout_acc:.1%}), "
        f"permuted labels {advice.null_heldout_loss:.3f}; gradient pass on {advice.n_grad_images} images"
    )
    print(f"directions above the null per block (block:count): {counts}")
    print(f"seconds: {total:.1f} total, {advice.seconds:.1f} for the head fits and gradient passes")
    print(VALIDATION)


def cmd_advise_rank(args: argparse.Namespace) -> int:
    from ..analysis.advise import advise_rank_from_config, table_ranks

    cfg = run_config(args, required=("backbone.name", "data.name"))
    backbone, data = cfg.backbone, cfg.data
    if args.permutations:
        from ..analysis.advise_null import advise_null_from_config

        null_advice, total = advise_null_from_config(
            backbone,
            data,
            args.placement,
            args.images,
            args.grad_images,
            args.permutations,
            args.quantile,
            args.seed,
            args.device,
        )
        _print_null(null_advice, total)
        if args.json:
            emit_json(args.json, {**null_advice.to_dict(), "total_seconds": total}, getattr(args, "json_stream", None))
        return 0
    advice, total = advise_rank_from_config(
        backbone,
        data,
        args.placement,
        args.batches,
        args.batch_size,
        args.threshold,
        args.signal,
        args.seed,
        args.device,
        args.null_check,
    )
    rows = [{"rank r": r, "captured energy E(r)": f"{advice.energy_at(r):.3f}"} for r in table_ranks(advice.width)]
    if advice.null_energy is not None:
        for row in rows:
            row["E(r), labels permuted"] = f"{advice.null_energy_at(row['rank r']):.3f}"
    print(format_table(rows))
    per_block = " ".join(f"{b}:{r}" for b, r in advice.block_ranks.items())
    print(f"per-block ranks at {advice.threshold:.0%} (block:r): {per_block}")
    print(
        f"head-only fit (2 folds, {advice.n_images} images): train loss {advice.head_train_loss:.3f}, "
        f"held-out {advice.head_heldout_loss:.3f} (L2 {advice.head_l2:g}); "
        f"signal '{advice.signal}' over {advice.n_tokens} tokens"
    )
    print(f"advised rank: {advice.advised_rank}  (smallest r with mean E(r) >= {advice.threshold:.0%})")
    if advice.null_rank is not None:
        gap = max(e - n for e, n in zip(advice.energy, advice.null_energy))
        print(
            f"null check: with the labels permuted the same rule gives r={advice.null_rank}; the true curve is at "
            f"most {gap:.3f} above the permuted one (near 0: the spectrum is the backbone's, not this task's)"
        )
    print(f"seconds: {total:.1f} total, {advice.seconds:.1f} for the signal pass")
    print(VALIDATION)
    if args.json:
        emit_json(args.json, {**advice.to_dict(), "total_seconds": total}, getattr(args, "json_stream", None))
    return 0
