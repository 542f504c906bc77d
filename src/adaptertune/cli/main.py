"""Argument parsing and the subcommands.

``adaptertune --help`` and the commands without config flags start without torch: the top-level parser knows
every command by its name and one-line help only, and only the command being run gets its arguments (the
config flags of ``train``, ``advise-rank``, ``drift`` and ``speed`` read the registered methods' options,
which imports torch and every method).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from ..errors import AdapterTuneError, ConfigError
from . import advise, bench, drift, elbow, export, report, speed, sweep, toy
from .flags import ArgumentParser, add_config_flags, config_dict
from .progress import TqdmProgress, add_json_option, emit_json, format_table, print_skipped

if TYPE_CHECKING:
    from ..config import DataConfig
    from ..engine import Callback

__all__ = ["COMMANDS", "build_parser", "main"]


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=0.001 rank=8")
    add_config_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out-dir")
    p.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import RunConfig
    from ..engine import distributed, resolve_device
    from ..resolve import resolve_config
    from ..runs import resume_config, resume_run, run
    from ..runs.summary import augment_label

    overrides = config_dict(args, overrides=args.overrides)
    cfg = resume_config(args.resume, overrides) if args.resume else RunConfig.from_dict(overrides)
    info = distributed.dist_info_from_env(os.environ)  # set by torchrun
    if info.is_main:  # what trains, as the protocol records it (a cached-features method never augments)
        data = resolve_config(cfg).data
        print(f"augmentation: {augment_label(data)} ({_augment_source(data)})", flush=True)
    distributed.init_distributed(info, resolve_device(cfg.train.device), cfg.train.dist_timeout_minutes)
    try:
        progress = [TqdmProgress(enabled=not args.quiet), *args.callbacks] if info.is_main else []
        if args.resume:
            summary = resume_run(args.resume, progress, overrides)
        else:
            summary = run(cfg, callbacks=progress, overwrite=args.overwrite)
    except KeyboardInterrupt:
        if info.is_main:
            print(_interrupted_hint(cfg.out_dir), file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    if not info.is_main:
        return 0
    s = summary.to_dict()
    row = {k: s[k] for k in ("method", "backbone", "dataset", "rank", "seed")}
    row.update(
        test_acc=f"{s['test_acc']:.2f}",
        test_acc_last=f"{s['test_acc_last']:.2f}",
        best_val=f"{s['best_val_acc']:.2f}" if s["best_val_acc"] is not None else "-",
        best_epoch=s["best_epoch"],
        trainable=f"{s['trainable_params']:,}",
        seconds=f"{s['train_seconds']:.1f}",
    )
    print(format_table([row]))
    print(f"run folder: {cfg.out_dir}")
    return 0


def _augment_source(data: DataConfig) -> str:
    """The settings behind the train start line's augmentation label."""
    if not data.augment or data.aug == "none":
        return f"data.augment {str(data.augment).lower()}, data.aug {data.aug}: the eval transform"
    flips = "flips on; --no-hflip forbids them" if data.hflip else "flips off: data.hflip false"
    return f"data.aug {data.aug}, {flips}, crop scale {data.crop_scale:g}..1"


def _interrupted_hint(out_dir: str) -> str:
    """What a Ctrl-C left: the command that continues the run, or that the earlier run is unchanged."""
    import shlex

    from ..runs import RunStatus, read_state

    state = read_state(out_dir, check_lock=False)
    if state.resumable:
        where = f" from epoch {state.checkpoint[0]}, step {state.checkpoint[1]}" if state.checkpoint else ""
        return f"interrupted; continue{where} with: adaptertune train --resume {shlex.quote(str(out_dir))}"
    if state.status is RunStatus.SUCCESS:
        return f"interrupted; the earlier run in {out_dir} is unchanged"
    return "interrupted"


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    add_json_option(p, "the result")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..runs import evaluate_run

    r = evaluate_run(args.run_dir, device=args.device)
    row = {
        "run": args.run_dir,
        "test_acc": f"{r['test_acc']:.2f}",
        "test_top5": f"{r['test_top5']:.2f}",
        "recorded_test_acc": f"{r['recorded_test_acc']:.2f}",
        "n": r["n"],
        "skipped": r["skipped"],
    }
    print(format_table([row]))
    if args.json:
        emit_json(args.json, r, getattr(args, "json_stream", None))
    return 0


def _add_predict(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..runs import predict

    if args.adapters is not None:  # several tasks on one backbone
        from .multitask import cmd_predict_adapters

        return cmd_predict_adapters(args)
    if len(args.paths) < 2:
        raise ConfigError("predict needs RUN_DIR and at least one IMAGE (or --adapters FILE... IMAGE...).")
    results = predict(args.paths[0], args.paths[1:], topk=args.topk, device=args.device)
    for r in (r for r in results if "top" in r):
        print(r["image"])
        for cls, p in r["top"]:
            print(f"  {p:7.2%}  {cls}")
    print_skipped([r for r in results if "error" in r], len(results))
    return 0


def _add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["backbones", "datasets", "methods", "presets"])
    p.add_argument("--filter", default=None, help="shell pattern, e.g. 'vit_*'")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "backbones":
        from ..backbones import BACKBONES

        rows = [
            {"name": b.name, "timm model": b.model_name, "description": b.description}
            for b in BACKBONES.list(args.filter)
        ]
    elif args.what == "datasets":
        from ..data import DATASETS

        rows = [
            {
                "name": d.name,
                "classes": d.num_classes or "from files",
                "splits": d.splits,
                "source": d.source,
                "present": ("yes" if d.present(None) else "no") if d.present else "?",
                "description": d.description,
            }
            for d in DATASETS.list(args.filter)
        ]
    elif args.what == "presets":
        from ..sweeps import PRESETS

        rows = [{"name": p.name, "spec": p.spec, "description": p.description} for p in PRESETS.list(args.filter)]
    else:
        from ..methods import METHODS

        rows = [
            {
                "name": m.name,
                "lr": m.defaults.get("lr"),
                "adapter options": ", ".join(m.option_names()) or "none",
                "description": m.description,
            }
            for m in METHODS.list(args.filter)
        ]
    print(format_table(rows))
    return 0


# Every command, in the order `adaptertune --help` lists them: its one-line help and the function that adds its
# arguments (and sets ``func``), called only for the command being run. Add a line here to add a command.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": ("train one run", _add_train),
    "eval": ("re-evaluate a finished run on its test split", _add_eval),
    "predict": ("top-k classes for image files (one run, or many adapter files)", _add_predict),
    "list": ("list registered backbones, datasets, methods or presets", _add_list),
    "export": (export.HELP, export.add_arguments),
    "sweep": (sweep.HELP, sweep.add_arguments),
    "report": (report.HELP, report.add_arguments),
    "bench": (bench.HELP, bench.add_arguments),
    "advise-rank": (advise.HELP, advise.add_arguments),
    "drift": (drift.HELP, drift.add_arguments),
    "toy": (toy.HELP, toy.add_arguments),
    "speed": (speed.HELP, speed.add_arguments),
    "elbow": (elbow.HELP, elbow.add_arguments),
}


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``adaptertune`` parser; only ``commands`` (default: all) get their arguments, the others their name
    and help line."""
    parser = ArgumentParser(prog="adaptertune", description="Zero-initialized low-rank adapters for frozen ViTs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (line, add_arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=line)
        if commands is None or name in commands:
            add_arguments(p)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (the top level's options take no
    value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Args:
        callbacks: training callbacks added to ``train``'s progress bar (on the main process), e.g. to
            embed the CLI in a job runner that watches the steps.
    """
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("ADAPTERTUNE_DEBUG") == "1"
    try:
        args = build_parser([c] if (c := _command(argv)) else []).parse_args(argv)
        args.callbacks = list(callbacks)
        if getattr(args, "json", None) == "-":  # JSON alone on stdout; tables and notes go to stderr
            args.json_stream = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                return args.func(args)
        return args.func(args)
    except AdapterTuneError as e:  # bad input, or a missing optional extra (MissingExtraError)
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
