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

from ..errors import AdapterTuneError
from . import advise, bench, drift, elbow, export, predict, report, speed, sweep, toy
from .flags import ArgumentParser, add_config_flags, config_dict
from .progress import TqdmProgress, add_json_option, emit_json, format_table

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
    from ..runs.folder import SKIPPED_FILE
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
    row = {"variant": s["label"] or s["method"], **{k: s[k] for k in ("backbone", "dataset", "seed")}}
    row.update(
        test_acc=f"{s['test_acc']:.2f}",
        test_acc_last=f"{s['test_acc_last']:.2f}",
        best_val_acc=f"{s['best_val_acc']:.2f}" if s["best_val_acc"] is not None else "-",
        best_epoch=s["best_epoch"],
        trainable_params=f"{s['trainable_params']:,}",  # the names of summary.json and results.csv
        train_seconds=f"{s['train_seconds']:.1f}",
    )
    print(format_table([row]))
    print(f"run folder: {cfg.out_dir}")
    _print_unreadable(summary.unreadable_images, os.path.join(cfg.out_dir, SKIPPED_FILE))
    return 0


def _print_unreadable(counts: dict[str, int], path: str | None, write_error: str | None = None) -> None:
    """``skipped 2 unreadable images (train 1, test 1): see RUN/skipped.txt`` on stderr, when any was skipped."""
    from ..runs.skipped import skipped_note

    if note := skipped_note(counts, None if write_error else path):
        print(note + (f" (not recorded: {write_error})" if write_error else ""), file=sys.stderr)


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
    _print_unreadable({"test": len(r["unreadable"])}, r["skipped_file"], r["skipped_file_error"])
    if args.json:
        emit_json(args.json, r, getattr(args, "json_stream", None))
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
                "options": ", ".join(f"{m.name}.{o}" for o in m.option_names()) or "none",
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
    "predict": (predict.HELP, predict.add_arguments),
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
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module or .py file that registers methods (repeatable; env: ADAPTERTUNE_PLUGINS=A,B)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (line, add_arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=line)
        if commands is None or name in commands:
            add_arguments(p)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is neither an option nor ``--plugin``'s value."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--plugin":
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def _plugins(argv: Sequence[str]) -> list[str]:
    """The values of the top-level ``--plugin`` options before the command (``--plugin X``, ``--plugin=X``)."""
    out, command = [], _command(argv)
    for i, a in enumerate(argv):
        if a == command:
            break
        if a == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--plugin="):
            out.append(a.partition("=")[2])
    return out


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Args:
        callbacks: training callbacks added to ``train``'s progress bar (on the main process), e.g. to
            embed the CLI in a job runner that watches the steps.
    """
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("ADAPTERTUNE_DEBUG") == "1"
    try:
        if plugins := _plugins(argv):  # before the command's flags are made: they read the methods' options
            from ..methods.plugins import add_plugins

            add_plugins(plugins)  # and ADAPTERTUNE_PLUGINS, for every child process started from here
        args = build_parser([c] if (c := _command(argv)) else []).parse_args(argv)
        args.callbacks = list(callbacks)
        if "-" in (getattr(args, "json", None), getattr(args, "csv", None)):  # data alone on stdout; the rest: stderr
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
