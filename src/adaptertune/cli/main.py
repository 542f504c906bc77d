"""Argument parsing and the subcommands."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from ..errors import AdapterTuneError, ConfigError
from .progress import TqdmProgress, format_table

__all__ = ["build_parser", "main", "train_config_dict"]

# flag dest -> dotted config key
_FLAG_KEYS = {
    "backbone": "backbone.name",
    "pretrained": "backbone.pretrained",
    "weights": "backbone.weights",
    "dataset": "data.name",
    "data_root": "data.root",
    "val_fraction": "data.val_fraction",
    "split_seed": "data.split_seed",
    "subset": "data.subset",
    "test_subset": "data.test_subset",
    "num_workers": "data.num_workers",
    "augment": "data.augment",
    "strict": "data.strict",
    "download": "data.download",
    "data_split": "data.split",
    "resize": "data.resize",
    "method": "method",
    "rank": "adapter.rank",
    "alpha": "adapter.alpha",
    "init": "adapter.init",
    "dropout": "adapter.dropout",
    "placement": "adapter.placement",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "decay_all": "train.decay_all",
    "warmup_epochs": "train.warmup_epochs",
    "grad_clip": "train.grad_clip",
    "label_smoothing": "train.label_smoothing",
    "seed": "train.seed",
    "precision": "train.precision",
    "device": "train.device",
    "out_dir": "out_dir",
}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # only flags given on the command line override config files
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=0.001 rank=8")
    p.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable; later wins)"
    )
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", default=S, help="registered backbone or any timm ViT name")
    g.add_argument(
        "--backbone-arg", action="append", default=[], metavar="K=V", help="timm model kwarg, e.g. img_size=32"
    )
    g.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="load pretrained weights (default); missing weights are an error, never a random init",
    )
    g.add_argument("--weights", default=S, metavar="FILE", help="local .safetensors/.pth backbone weights")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S)
    g.add_argument("--data-root", default=S, metavar="DIR")
    g.add_argument("--val-fraction", type=float, default=S)
    g.add_argument("--split-seed", type=int, default=S, help="seed of the train/val split (not the training seed)")
    g.add_argument("--subset", type=int, default=S, metavar="N", help="fixed stratified subset of N training images")
    g.add_argument("--test-subset", type=int, default=S, metavar="N")
    g.add_argument("--num-workers", type=int, default=S)
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=S)
    g.add_argument("--strict", action="store_true", default=S, help="a corrupt image is an error, not a skip")
    g.add_argument("--download", action="store_true", default=S)
    g.add_argument("--data-split", default=S, metavar="NAME", help="a published split, e.g. vtab-1k's train800")
    g.add_argument("--resize", default=S, choices=("crop", "squash"), help="squash: straight to size x size")
    g = p.add_argument_group("method")
    g.add_argument("--method", default=S, help="head, full, adapter, ... (adaptertune list methods)")
    g.add_argument("--rank", default=S, help="adapter bottleneck rank r")
    g.add_argument("--alpha", default=S, help="adapter output scale")
    g.add_argument("--init", default=S, help="zero (the method), small or random")
    g.add_argument("--dropout", default=S)
    g.add_argument("--placement", default=S, help="all, every:K, first:N, last:N or indices 0,5,11")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", default=S)
    g.add_argument("--batch-size", default=S)
    g.add_argument("--lr", default=S, help="peak learning rate (default: the method's)")
    g.add_argument("--weight-decay", default=S)
    g.add_argument("--decay-all", action="store_true", default=S, help="decay biases/norms/tokens too (paper's code)")
    g.add_argument("--warmup-epochs", default=S)
    g.add_argument("--grad-clip", default=S)
    g.add_argument("--label-smoothing", default=S)
    g.add_argument("--seed", default=S)
    g.add_argument("--precision", default=S, help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16")
    g.add_argument("--device", default=S, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--out-dir", default=S, metavar="DIR")


def _parse_value(raw: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def train_config_dict(args: argparse.Namespace) -> dict[str, Any]:
    """Merge YAML files, then flags, then key=value overrides into one nested config dict."""
    from ..config import load_yaml, merge_dicts
    from ..config_keys import apply_overrides

    d: dict[str, Any] = {}
    for path in args.config:
        d = merge_dicts(d, load_yaml(path))
    flags = [f"{_FLAG_KEYS[k]}={v}" for k, v in vars(args).items() if k in _FLAG_KEYS and not isinstance(v, bool)]
    d = apply_overrides(d, flags)
    for k, v in vars(args).items():  # booleans: set directly (no YAML round trip)
        if k in _FLAG_KEYS and isinstance(v, bool):
            section, _, leaf = _FLAG_KEYS[k].rpartition(".")
            d.setdefault(section, {})[leaf] = v
    if args.backbone_arg:
        d.setdefault("backbone", {}).setdefault("args", {}).update(parse_backbone_args(args.backbone_arg))
    return apply_overrides(d, args.overrides)


def parse_backbone_args(items: list[str]) -> dict[str, Any]:
    """``["img_size=56", ...]`` (repeated ``--backbone-arg``) -> ``{"img_size": 56}`` with YAML-parsed values."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--backbone-arg '{item}' must look like NAME=VALUE (e.g. img_size=32).")
        out[key.strip()] = _parse_value(raw)
    return out


class _KillAtStep:
    """SIGKILLs this process once ``n`` optimizer steps are done (the kill/resume tests)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        pass

    def on_step(self, step: int, loss: float, lr: float) -> None:
        if step + 1 == self.n:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        pass


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import RunConfig
    from ..engine import distributed, resolve_device
    from ..runs import resume_config, resume_run, run

    overrides = train_config_dict(args)
    cfg = resume_config(args.resume, overrides) if args.resume else RunConfig.from_dict(overrides)
    info = distributed.dist_info_from_env(os.environ)  # set by torchrun
    distributed.init_distributed(info, resolve_device(cfg.train.device), cfg.train.dist_timeout_minutes)
    try:
        progress = [TqdmProgress(enabled=not args.quiet)] if info.is_main else []
        if info.is_main and os.environ.get("ADAPTERTUNE_TEST_KILL_AT_STEP"):  # test hook: simulate a killed job
            progress.append(_KillAtStep(int(os.environ["ADAPTERTUNE_TEST_KILL_AT_STEP"])))
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


def cmd_eval(args: argparse.Namespace) -> int:
    from ..runs import evaluate_run

    r = evaluate_run(args.run_dir, device=args.device)
    print(
        format_table(
            [
                {
                    "run": args.run_dir,
                    "test_acc": f"{r['test_acc']:.2f}",
                    "test_top5": f"{r['test_top5']:.2f}",
                    "recorded_test_acc": f"{r['recorded_test_acc']:.2f}",
                    "n": r["n"],
                    "skipped": r["skipped"],
                }
            ]
        )
    )
    if args.json:
        print(json.dumps(r))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..runs import predict

    if args.adapters is not None:  # several tasks on one backbone
        from .multitask import cmd_predict_adapters

        return cmd_predict_adapters(args)
    if len(args.paths) < 2:
        raise ConfigError("predict needs RUN_DIR and at least one IMAGE (or --adapters FILE... IMAGE...).")
    for r in predict(args.paths[0], args.paths[1:], topk=args.topk, device=args.device):
        print(r["image"])
        for cls, p in r["top"]:
            print(f"  {p:7.2%}  {cls}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..backbones import BACKBONES
    from ..data import DATASETS
    from ..methods import METHODS

    if args.what == "backbones":
        rows = [
            {"name": b.name, "timm model": b.model_name, "description": b.description}
            for b in BACKBONES.list(args.filter)
        ]
    elif args.what == "datasets":
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
    else:
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


# Subcommands that live in their own module ``cli/<name>.py``, each exposing ``add_parser(subparsers)``
# (which sets ``func``). Add a module name here to add a command.
EXTRA_COMMANDS: tuple[str, ...] = ("export", "sweep", "report", "bench", "advise", "drift", "toy", "speed", "elbow")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptertune", description="Zero-initialized low-rank adapters for frozen ViTs."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one run")
    _add_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out-dir")
    p.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="re-evaluate a finished run on its test split")
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("predict", help="top-k classes for image files (one run, or many adapter files)")
    p.add_argument("paths", nargs="*", metavar="RUN_DIR IMAGE", help="a run folder, then image files")
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
    p = sub.add_parser("list", help="list registered backbones, datasets or methods")
    p.add_argument("what", choices=["backbones", "datasets", "methods"])
    p.add_argument("--filter", default=None, help="shell pattern, e.g. 'vit_*'")
    p.set_defaults(func=cmd_list)
    for name in EXTRA_COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("ADAPTERTUNE_DEBUG") == "1"
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except AdapterTuneError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if debug or "pip install" not in str(e):  # only a missing optional extra is a user error
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
