"""``adaptertune predict --adapters A.safetensors B.safetensors ... IMAGE...``: one backbone, many tasks."""

from __future__ import annotations

import argparse

from ..errors import ConfigError

__all__ = ["cmd_predict_adapters"]


def cmd_predict_adapters(args: argparse.Namespace) -> int:
    from ..engine import resolve_device
    from ..multitask import MultiTaskModel, predict_tasks
    from .progress import print_skipped

    given = [*args.adapters, *args.paths]
    files = [p for p in given if p.endswith(".safetensors")]
    images = [p for p in given if not p.endswith(".safetensors")]
    if not files or not images:
        raise ConfigError("predict --adapters needs adapter files (*.safetensors) and at least one image file.")
    model = MultiTaskModel.from_files(files, weights=args.weights)
    model.to(resolve_device(args.device))
    print(f"backbone {model.identity['backbone']} loaded once; tasks: {', '.join(model.tasks)}")
    results = predict_tasks(model, images, topk=args.topk)
    for image in dict.fromkeys(r["image"] for r in results if "top" in r):
        print(image)
        for r in (r for r in results if r["image"] == image):
            print(f"  [{r['task']}] " + ", ".join(f"{cls} {p:.1%}" for cls, p in r["top"]))
    print_skipped([r for r in results if "error" in r], len({r["image"] for r in results}))
    return 0
