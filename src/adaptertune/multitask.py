"""Many tasks on one frozen backbone: each task is an adapter file (its method's tensors + its own head).

The backbone is built once; every task's method attaches the file's tensors under the task's name
(:meth:`~adaptertune.methods.registry.Method.attach`: adapter sets, LoRA sets, nothing for head-only
methods), and its classifier joins a ``ModuleDict`` of heads. :meth:`MultiTaskModel.set_active` switches both
through the methods' ``activate``, so the logits of the active task equal those of a model built for that
task alone. Methods that change the backbone itself (``shares_backbone = False``) cannot be tasks.

Example:
    >>> mt = MultiTaskModel.from_files(["pets.safetensors", "flowers.safetensors"])
    >>> mt.set_active("pets"); logits = mt(images)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbones import create_backbone
from .config import BackboneConfig
from .errors import CheckpointError, ConfigError
from .methods import METHODS
from .runs.adapter_file import check_adapter_file, check_run_file, file_options, read_adapter_file
from .runs.folder import ADAPTER_FILE, LEGACY_ADAPTER_FILES
from .vit import backbone_width, feature_width

__all__ = ["MultiTaskModel", "Task", "predict_tasks"]

_logger = logging.getLogger(__name__)


@dataclass
class Task:
    name: str
    method: str
    classes: list[str]
    source: str


class MultiTaskModel(nn.Module):
    """A frozen backbone (classifier removed) + named tasks; ``forward`` gives the active task's logits.

    With no active task (:meth:`disable`), ``forward`` returns the plain backbone's pre-logit features.
    """

    def __init__(self, backbone: nn.Module, identity: dict[str, Any], data_config: dict[str, Any]) -> None:
        super().__init__()
        backbone.reset_classifier(0)  # forward -> pre-logit features (B, D)
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.backbone = backbone.eval()
        self.heads = nn.ModuleDict()
        self.tasks: dict[str, Task] = {}
        self.identity = identity  # backbone name/args/weights sha256 and width every task must match
        self.data_config = data_config
        self.active: str | None = None

    # ------------------------------------------------------------ construction
    @classmethod
    def from_files(cls, paths: list[str | Path], weights: str | None = None, names: list[str] | None = None):
        """Build the backbone recorded in the first file, then add every file as a task (named by file stem)."""
        if not paths:
            raise ConfigError("Give at least one adapter file.")
        _, meta = read_adapter_file(paths[0])
        if "backbone_config" not in meta:
            raise CheckpointError(f"'{paths[0]}' does not record how its backbone was built (older file).")
        bcfg = BackboneConfig(**{**meta["backbone_config"], **({"weights": weights} if weights else {})})
        built = create_backbone(bcfg, num_classes=len(meta["classes"]), seed=meta.get("init_seed", 0))
        identity = {
            "backbone": bcfg.name,
            "backbone_args": bcfg.args,
            "weights_sha256": built.weights_sha256,
            "weights_tag": built.weights_tag,
            "width": backbone_width(built.model),
        }
        model = cls(built.model, identity, built.data_config)
        names = names or [_task_name(p) for p in paths]
        if len(set(names)) != len(names):
            raise ConfigError(f"Task names must be unique, got {names}; rename the files or pass names=.")
        for name, path in zip(names, paths, strict=True):
            model.add_task(name, path)
        return model

    def add_task(self, name: str, path: str | Path) -> Task:
        """Load adapter file ``path`` as task ``name`` (its method's tensors and head); it becomes active.

        A file inside a run folder must be that run's (:func:`~adaptertune.runs.adapter_file.check_run_file`); a
        bare file serves the classes it records.
        """
        if name in self.tasks:
            raise ConfigError(f"A task named '{name}' already exists; remove it first or pick another name.")
        tensors, meta = read_adapter_file(path)
        check_run_file(path, meta)
        info = METHODS.get(meta["method"])
        if not info.shares_backbone:
            sharing = ", ".join(m.name for m in METHODS if m.shares_backbone)
            raise ConfigError(
                f"'{path}' was trained with method '{info.name}', which changes the backbone itself; tasks on a "
                f"shared backbone need one of: {sharing}."
            )
        options = file_options(meta)
        check_adapter_file(meta, {**self.identity, "method": info.name, "options": options}, str(path))
        head_sd = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        rest = {k: v for k, v in tensors.items() if not k.startswith("head.")}
        head = self._make_head(head_sd, meta, path)
        try:
            info.attach(self.backbone, name, info.resolve(options), rest, str(path))
        finally:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        self.heads[name] = head.to(next(self.backbone.parameters()).device)
        self.tasks[name] = Task(name, info.name, list(meta["classes"]), str(path))
        self.set_active(name)
        return self.tasks[name]

    def _make_head(self, sd: dict[str, torch.Tensor], meta: dict[str, Any], path: Any) -> nn.Linear:
        if set(sd) != {"weight", "bias"} or sd["weight"].ndim != 2:
            raise CheckpointError(f"'{path}' has no linear head 'head.weight'/'head.bias' (keys {sorted(sd)}).")
        n, d = sd["weight"].shape
        width = feature_width(self.backbone)
        if n != len(meta["classes"]) or d != width:
            raise CheckpointError(f"'{path}': head is {n}x{d}, expected {len(meta['classes'])} classes x {width}.")
        head = nn.Linear(d, n)
        head.load_state_dict(sd)
        return head.requires_grad_(False)

    # ------------------------------------------------------------ switching
    def set_active(self, name: str | None) -> None:
        """Make task ``name`` active (its method's tensors and head); ``None`` runs the plain backbone."""
        if name is not None and name not in self.tasks:
            raise ConfigError(f"No task named '{name}'; this model has: {', '.join(self.tasks) or 'none'}.")
        method = self.tasks[name].method if name else None
        for m in sorted({t.method for t in self.tasks.values()} - {method}):  # the others off first
            METHODS.get(m).activate(self.backbone, None)
        if method is not None:
            METHODS.get(method).activate(self.backbone, name)
        self.active = name

    def disable(self) -> None:
        """No task active: ``forward`` returns the frozen backbone's features."""
        self.set_active(None)

    def remove_task(self, name: str) -> None:
        """Delete task ``name``: its method's tensors and its head."""
        if name not in self.tasks:
            raise ConfigError(f"No task named '{name}'; this model has: {', '.join(self.tasks) or 'none'}.")
        METHODS.get(self.tasks.pop(name).method).detach(self.backbone, name)
        del self.heads[name]
        if self.active == name:
            self.set_active(None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)  # (B, D) pre-logit features of the (adapted) backbone
        return self.heads[self.active](f) if self.active is not None else f


def _task_name(path: str | Path) -> str:
    p = Path(path)
    # runs/pets/adaptertune_weights.safetensors -> pets; pets.safetensors -> pets
    return p.parent.name if p.name in (ADAPTER_FILE, *LEGACY_ADAPTER_FILES) else p.stem


@torch.no_grad()
def predict_tasks(model: MultiTaskModel, images: list[str | Path], topk: int = 5) -> list[dict[str, Any]]:
    """Top-k of every task for every image: ``[{"image", "task", "top": [(class, p), ...]}, ...]``.

    ``images`` may name files, folders and globs; a file that cannot be decoded gives one ``{"image", "error"}``.
    """
    from .data import build_transforms, find_images, read_images

    _, tf = build_transforms(model.data_config, augment=False)
    device = next(model.parameters()).device
    read = read_images(find_images(images), tf)
    good = [(path, x) for path, x in read if not isinstance(x, str)]
    x = torch.stack([x for _, x in good]).to(device)
    out: list[dict[str, Any]] = []
    for name, task in model.tasks.items():
        model.set_active(name)
        probs = model(x).float().softmax(-1)
        p, i = probs.topk(min(topk, probs.shape[1]), dim=1)
        for (path, _), pr, ix in zip(good, p.tolist(), i.tolist(), strict=True):
            out.append({"image": str(path), "task": name, "top": [(task.classes[j], q) for q, j in zip(pr, ix)]})
    return out + [{"image": str(path), "error": why} for path, why in read if isinstance(why, str)]
