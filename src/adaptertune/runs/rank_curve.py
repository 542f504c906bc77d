"""A nested run's rank curve (``rank_curve.csv``): its selected model evaluated at every rank of its grid.

A method with nested ranks (``Method.eval_ranks``: AdapterTune with ``adapter.nested``) trains one model whose
leading sub-models of every rank of a grid are trained too. At the end of the run the model the run selected
(best validation accuracy at full rank, or the last epoch without a validation split: the run's ``selection``)
is evaluated on the validation and test splits at each rank, rank 0 being the adapters off with the trained
head: not a head-only run (the head was trained on adapted features; on Fashion-MNIST it scores 27-35% where a
head trained alone scores ~70%), so ``adaptertune elbow`` leaves it out. The rows carry the columns of a report's
``results.csv`` that ``adaptertune elbow`` reads (``rank``,
``seed``, ``test_acc``, grouped by ``dataset``, ``backbone``, ``method`` and ``variant`` without its rank), so
the curves of several seeds' nested runs are one sweep to it; ``nested`` marks the rows (1) and ``selected_by``
says which model was evaluated.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write_text
from ..engine import evaluate
from ..errors import ConfigError, DataError
from ..methods import Method
from ..vit import head_parameter_names
from .folder import RANK_CURVE_FILE

__all__ = ["RANK_CURVE_COLUMNS", "rank_curve", "rank_curve_path", "serve_at_rank", "write_rank_curve"]

RANK_CURVE_COLUMNS = (
    "run",
    "status",
    "dataset",
    "backbone",
    "method",
    "variant",
    "rank",
    "seed",
    "test_acc",
    "val_acc",
    "trainable_params",
    "nested",
    "selected_by",
)


def rank_curve(
    method: Method,
    options: Any,
    model: nn.Module,
    loaders: tuple[Iterable, Iterable | None, Iterable],
    device: torch.device,
    precision: str,
) -> list[dict[str, Any]]:
    """Validation and test accuracy of ``model`` (what ``fit`` trained, holding the selected tensors) at each of
    ``method.eval_ranks(options)`` over ``fit``'s own ``loaders``; [] for a method or options without nested
    ranks. Every process of a torchrun job calls it (the sums are reduced); the model is left at full rank."""
    out = []
    try:
        for r in method.eval_ranks(options):
            method.set_eval_rank(model, r)
            val = evaluate(model, loaders[1], device, precision) if loaders[1] is not None else None
            test = evaluate(model, loaders[2], device, precision)
            out.append({"rank": r, "val_acc": None if val is None else val["acc"], "test_acc": test["acc"]})
    finally:
        if out:
            method.set_eval_rank(model, None)
    return out


def _variant(label: str, rank: int) -> str:
    """The run's label with its ``r=`` token at ``rank`` (``adapter r=64 nested=True`` -> ``adapter r=8 ...``)."""
    return " ".join(f"r={rank}" if t.startswith("r=") else t for t in label.split())


def _trainable(method: Method, options: Any, tensors: dict[str, torch.Tensor], model: nn.Module, rank: int) -> int:
    """Trainable parameters of the model at ``rank``: the truncated tensors (0: the head's alone)."""
    if rank == 0:
        head = set(head_parameter_names(model))
        return sum(v.numel() for k, v in tensors.items() if k in head)
    return sum(v.numel() for v in method.truncate(tensors, options, rank)[0].values())


def write_rank_curve(
    run_dir: Path,
    curve: list[dict[str, Any]],
    summary: Any,
    method: Method,
    options: Any,
    tensors: dict[str, torch.Tensor],
    model: nn.Module,
) -> Path:
    """Write ``curve`` (:func:`rank_curve`) as ``run_dir/rank_curve.csv`` with the run's identity from
    ``summary`` and each rank's trainable parameters (from the selected ``tensors`` of the built ``model``)."""
    label = method.label(options)
    rows = [
        {
            "run": run_dir.name,
            "status": "success",
            "dataset": summary.dataset,
            "backbone": summary.backbone,
            "method": summary.method,
            "variant": _variant(label, c["rank"]),
            "rank": c["rank"],
            "seed": summary.seed,
            "test_acc": f"{c['test_acc']:.4f}",
            "val_acc": "" if c["val_acc"] is None else f"{c['val_acc']:.4f}",
            "trainable_params": _trainable(method, options, tensors, model, c["rank"]),
            "nested": 1,
            "selected_by": f"{summary.selection} (full rank)",
        }
        for c in curve
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RANK_CURVE_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path = run_dir / RANK_CURVE_FILE
    atomic_write_text(path, buf.getvalue())
    return path


def rank_curve_path(path: str | Path) -> Path:
    """``path`` itself (a CSV file), or the rank curve of run folder ``path``.

    Raises:
        DataError: a folder without a rank curve (not a nested run, or not finished).
    """
    p = Path(path)
    if not p.is_dir():
        return p
    if not (p / RANK_CURVE_FILE).is_file():
        raise DataError(
            f"'{p}' has no {RANK_CURVE_FILE}: only a finished nested run (`adapter.nested: true`) writes one; "
            "give a run folder of one, or a CSV with rank, seed and accuracy columns."
        )
    return p / RANK_CURVE_FILE


def serve_at_rank(model: nn.Module, method: Method, options: Any, rank: int | None) -> None:
    """Make a loaded nested run's ``model`` serve at ``rank`` (1..its full rank; None: leave it at full rank).

    Raises:
        ConfigError: the run is not nested, or ``rank`` is not in 1..its rank (one line each).
    """
    if rank is None:
        return
    ranks = method.eval_ranks(options)
    if not ranks:
        raise ConfigError(
            f"--rank {rank} needs a nested run (`adapter.nested: true`); this {method.label(options)} run serves "
            "its trained size only."
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= max(ranks):
        raise ConfigError(
            f"--rank {rank} is not a rank of this nested run; use 1..{max(ranks)} (trained grid "
            f"{', '.join(map(str, (r for r in ranks if r)))})."
        )
    method.set_eval_rank(model, rank)
