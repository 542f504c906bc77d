"""``adaptertune predict RUN_DIR IMAGE...`` (one run) or ``predict --adapters FILE... IMAGE...`` (many tasks on
one backbone): the top-k classes of each image, for eyes (the default) or as records (``--json``, ``--csv``).

A record per (image, task), in the order the images were found and, within an image, the order of the tasks:

- JSON: a list of ``{"path": str, "task": str | null, "top": [{"class": str, "prob": float}, ...],
  "error": str | null}``; ``task`` is null for one run, ``top`` runs from the most probable class down,
  ``error`` (with ``top`` empty and ``task`` null) says why a file could not be read.
- CSV (RFC 4180 quoting, so any class name survives): ``path,task,class_1,prob_1,...,class_K,prob_K,error``
  with K the largest top-k of the records; cells a record does not fill are empty (``task`` for one run).

``-`` writes to stdout, and then nothing else does (the rest goes to stderr). Probabilities are the softmax of
the logits, full float precision.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .flags import add_rank_flag

__all__ = ["HELP", "add_arguments", "cmd_predict", "csv_text", "prediction_records"]

HELP = "top-k classes for image files (one run, or many adapter files)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths", nargs="*", metavar="RUN_DIR IMAGE", help="a run folder, then image files, folders or globs"
    )
    p.add_argument(
        "--adapters",
        nargs="+",
        default=None,
        metavar="FILE",
        help="adapter files (.safetensors) sharing one backbone, then image files: each file is a task",
    )
    p.add_argument("--weights", default=None, metavar="FILE", help="with --adapters: the backbone weights file")
    add_rank_flag(p)
    p.add_argument("--topk", type=int, default=5, help="classes per image and task (at most the task's classes)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--json", default=None, metavar="FILE|-", help="write the predictions as JSON records to FILE (-: stdout)"
    )
    p.add_argument(
        "--csv", default=None, metavar="FILE|-", help="write the predictions as CSV, one row per image and task"
    )
    p.set_defaults(func=cmd_predict)


def prediction_records(results: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """The records of :func:`~adaptertune.runs.predict` / :func:`~adaptertune.multitask.predict_tasks` results,
    sorted by the position of their image in ``order`` (results keep their order within an image)."""
    rank = {p: i for i, p in enumerate(order)}
    records = [
        {
            "path": r["image"],
            "task": r.get("task") if "top" in r else None,
            "top": [{"class": c, "prob": float(p)} for c, p in r.get("top", ())],
            "error": r.get("error"),
        }
        for r in results
    ]
    return sorted(records, key=lambda r: rank.get(r["path"], len(rank)))


def csv_text(records: list[dict[str, Any]]) -> str:
    """``records`` as CSV text (see the module docstring for the columns)."""
    import csv
    import io

    k = max((len(r["top"]) for r in records), default=0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "task", *(f"{x}_{i}" for i in range(1, k + 1) for x in ("class", "prob")), "error"])
    for r in records:
        top = [v for t in r["top"] for v in (t["class"], repr(t["prob"]))]
        w.writerow([r["path"], r["task"] or "", *top, *[""] * (2 * k - len(top)), r["error"] or ""])
    return buf.getvalue()


def _check_targets(args: argparse.Namespace) -> None:
    """Fail before any work on output flags that could never be written (nothing is written then)."""
    from ..atomic import check_output_file

    if args.topk < 1:
        raise ConfigError(f"--topk must be >= 1, got {args.topk}.")
    if args.json == "-" and args.csv == "-":
        raise ConfigError("--json - and --csv - both ask for stdout; send one of them to a FILE.")
    files = [t for t in (args.json, args.csv) if t not in (None, "-")]
    if len(files) == 2 and Path(files[0]).resolve() == Path(files[1]).resolve():
        raise ConfigError(f"--json and --csv both name '{files[0]}'; give them different files.")
    for f in files:
        check_output_file(f)


def _results(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """(the predictions, the image paths in the order found)."""
    from ..data import find_images

    if args.adapters is None:
        from ..runs import predict

        if len(args.paths) < 2:
            raise ConfigError("predict needs RUN_DIR and at least one IMAGE (or --adapters FILE... IMAGE...).")
        images = args.paths[1:]
        results = predict(args.paths[0], images, topk=args.topk, device=args.device, rank=args.rank)
    else:  # several tasks on one backbone
        if args.rank is not None:
            raise ConfigError(
                f"--rank {args.rank} applies to one run folder; for --adapters, write each file at its rank "
                "(adaptertune.runs.adapter_file.truncate_adapter_file)."
            )
        from ..engine import resolve_device
        from ..multitask import MultiTaskModel, predict_tasks

        given = [*args.adapters, *args.paths]
        files = [p for p in given if p.endswith(".safetensors")]
        images = [p for p in given if not p.endswith(".safetensors")]
        if not files or not images:
            raise ConfigError("predict --adapters needs adapter files (*.safetensors) and at least one image file.")
        model = MultiTaskModel.from_files(files, weights=args.weights)
        model.to(resolve_device(args.device))
        print(f"backbone {model.identity['backbone']} loaded once; tasks: {', '.join(model.tasks)}")
        results = predict_tasks(model, images, topk=args.topk)
    return results, [str(p) for p in find_images(images)]


def _print(records: list[dict[str, Any]], multitask: bool) -> None:
    for path in dict.fromkeys(r["path"] for r in records if r["error"] is None):
        print(path)
        for r in (r for r in records if r["path"] == path and r["error"] is None):
            if multitask:
                print(f"  [{r['task']}] " + ", ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"]))
            else:
                for t in r["top"]:
                    print(f"  {t['prob']:7.2%}  {t['class']}")


def cmd_predict(args: argparse.Namespace) -> int:
    from .progress import emit_json, emit_text, print_skipped

    _check_targets(args)
    results, order = _results(args)
    records = prediction_records(results, order)
    stream = getattr(args, "json_stream", None)
    if args.json is None and args.csv is None:
        _print(records, args.adapters is not None)
    if args.json is not None:
        emit_json(args.json, records, stream)
    if args.csv is not None:
        emit_text(args.csv, csv_text(records), stream)
    skipped = [r for r in records if r["error"] is not None]
    print_skipped([{"image": r["path"], "error": r["error"]} for r in skipped], len(order))
    return 0
