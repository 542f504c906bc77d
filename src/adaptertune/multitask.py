"""Many tasks on one frozen backbone: each task is an adapter file (adapter set + its own head).

The backbone is built once; every task adds its adapter set (serial ``adapter``, ``parallel`` or PEFT
``lora``; none for ``head``/``linear-probe-cached``) under the task's name, and its classifier to a
``ModuleDict`` of heads. :meth:`MultiTaskModel.set_active` switches both, so the logits of the active task
equal those of a model built for that task alone.

Example:
    >>> mt = MultiTaskModel.from_files(["pets.safetensors", "flowers.safetensors"])
    >>> mt.set_active("pets"); logits = mt(images)
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import adapters as adp
from .backbones import create_backbone
from .config import AdapterConfig, BackboneConfig
from .errors import CheckpointError, ConfigError
from .runs.adapter_file import check_adapter_file, read_adapter_file

__all__ = ["MultiTaskModel", "Task", "predict_tasks"]

_logger = logging.getLogger(__name__)
SHARED_BACKBONE_METHODS = ("adapter", "parallel", "lora", "head", "linear-probe-cached")


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
            "width": adp.backbone_width(built.model),
        }
        model = cls(built.model, identity, built.data_config)
        names = names or [_task_name(p) for p in paths]
        if len(set(names)) != len(names):
            raise ConfigError(f"Task names must be unique, got {names}; rename the files or pass names=.")
        for name, path in zip(names, paths, strict=True):
            model.add_task(name, path)
        return model

    def add_task(self, name: str, path: str | Path) -> Task:
        """Load adapter file ``path`` as task ``name`` (its adapter set and head); it becomes active."""
        if name in self.tasks:
            raise ConfigError(f"A task named '{name}' already exists; remove it first or pick another name.")
        tensors, meta = read_adapter_file(path)
        method = meta["method"]
        if method not in SHARED_BACKBONE_METHODS:
            raise ConfigError(
                f"'{path}' was trained with method '{method}', which changes the backbone itself; tasks on a shared "
                f"backbone need one of: {', '.join(SHARED_BACKBONE_METHODS)}."
            )
        check_adapter_file(meta, {**self.identity, "method": method, "adapter": meta.get("adapter")}, str(path))
        head_sd = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        rest = {k: v for k, v in tensors.items() if not k.startswith("head.")}
        head = self._make_head(head_sd, meta, path)
        cfg = AdapterConfig(**meta["adapter"]) if meta.get("adapter") else None
        if method in ("adapter", "parallel"):
            self._add_hook_set(name, method, cfg, rest, path)
        elif method == "lora":
            self._add_lora_set(name, cfg, rest, path)
        elif rest:
            raise CheckpointError(f"'{path}' ({method}) holds tensors other than the head: {sorted(rest)[:3]}.")
        self.heads[name] = head.to(next(self.backbone.parameters()).device)
        self.tasks[name] = Task(name, method, list(meta["classes"]), str(path))
        self.set_active(name)
        return self.tasks[name]

    def _make_head(self, sd: dict[str, torch.Tensor], meta: dict[str, Any], path: Any) -> nn.Linear:
        if set(sd) != {"weight", "bias"} or sd["weight"].ndim != 2:
            raise CheckpointError(f"'{path}' has no linear head 'head.weight'/'head.bias' (keys {sorted(sd)}).")
        n, d = sd["weight"].shape
        if n != len(meta["classes"]) or d != self.backbone.num_features:
            raise CheckpointError(
                f"'{path}': head is {n}x{d}, expected {len(meta['classes'])} classes x {self.backbone.num_features}."
            )
        head = nn.Linear(d, n)
        head.load_state_dict(sd)
        return head.requires_grad_(False)

    def _add_hook_set(self, name: str, method: str, cfg: AdapterConfig, sd: dict, path: Any) -> None:
        kinds = {self.tasks[t].method for t in self.tasks} & {"adapter", "parallel"}
        if kinds and kinds != {method}:
            raise ConfigError(
                f"Task '{name}' ({path}) uses '{method}' adapters but this model holds '{kinds.pop()}' adapters; "
                "serial and parallel adapter tasks cannot share one backbone."
            )
        if method == "adapter":
            adp.add_adapters(self.backbone, cfg, name=name)
        else:
            from .methods.parallel import add_parallel_adapters

            add_parallel_adapters(self.backbone, cfg, name=name)
        try:
            adp.load_adapter_state_dict(self.backbone, _adapter_keys(sd, path), name=name)
        except CheckpointError as e:
            adp.remove_adapters(self.backbone, name)
            raise CheckpointError(f"'{path}': {e}") from None
        finally:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def _add_lora_set(self, name: str, cfg: AdapterConfig, sd: dict, path: Any) -> None:
        from .methods.lora import add_lora

        with warnings.catch_warnings():  # PEFT warns that a second adapter set is being added: that is the point
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            add_lora(self.backbone, cfg, name=name)
        own = {k: p for k, p in self.backbone.named_parameters() if f".{name}." in k and ".lora_" in k}
        renamed = {k.replace(".default.", f".{name}."): v for k, v in sd.items()}
        if set(renamed) != set(own) or any(renamed[k].shape != own[k].shape for k in own):
            raise CheckpointError(f"'{path}': its LoRA tensors do not match the rebuilt LoRA layers.")
        with torch.no_grad():
            for k, v in renamed.items():
                own[k].copy_(v)
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------ switching
    def set_active(self, name: str | None) -> None:
        """Make task ``name`` active (its adapters and head); ``None`` runs the plain backbone."""
        if name is not None and name not in self.tasks:
            raise ConfigError(f"No task named '{name}'; this model has: {', '.join(self.tasks) or 'none'}.")
        method = self.tasks[name].method if name else None
        if adp.list_adapter_sets(self.backbone):
            adp.set_active(self.backbone, name if method in ("adapter", "parallel") else None)
        _set_lora(self.backbone, name if method == "lora" else None)
        self.active = name

    def disable(self) -> None:
        """No task active: ``forward`` returns the frozen backbone's features."""
        self.set_active(None)

    def remove_task(self, name: str) -> None:
        """Delete task ``name``: its adapter set (or LoRA weights) and head."""
        if name not in self.tasks:
            raise ConfigError(f"No task named '{name}'; this model has: {', '.join(self.tasks) or 'none'}.")
        method = self.tasks.pop(name).method
        if method in ("adapter", "parallel"):
            adp.remove_adapters(self.backbone, name)
        elif method == "lora":
            from peft.functional import delete_adapter

            delete_adapter(self.backbone, name, prefix="lora_")
        del self.heads[name]
        if self.active == name:
            self.set_active(None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)  # (B, D) pre-logit features of the (adapted) backbone
        return self.heads[self.active](f) if self.active is not None else f


def _set_lora(model: nn.Module, name: str | None) -> None:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        on = name is not None and name in layer.lora_A
        if on:
            layer.set_adapter(name)
        layer.enable_adapters(on)
    for p in model.parameters():
        p.requires_grad_(False)


def _adapter_keys(sd: dict[str, torch.Tensor], path: Any) -> dict[str, torch.Tensor]:
    """Model parameter names (``blocks.3.adapters.default.up.weight``) -> ``adapters.3.up.weight``."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) < 5 or parts[0] != "blocks" or parts[2] != "adapters":
            raise CheckpointError(f"'{path}' holds '{k}', not an adapter tensor of a timm ViT block.")
        out[f"adapters.{parts[1]}.{'.'.join(parts[4:])}"] = v
    return out


def _task_name(path: str | Path) -> str:
    p = Path(path)
    return p.parent.name if p.stem == "adapter" else p.stem  # runs/pets/adapter.safetensors -> pets


@torch.no_grad()
def predict_tasks(model: MultiTaskModel, images: list[str | Path], topk: int = 5) -> list[dict[str, Any]]:
    """Top-k of every task for every image: ``[{"image", "task", "top": [(class, p), ...]}, ...]``."""
    from PIL import Image

    from .data import build_transforms

    _, tf = build_transforms(model.data_config, augment=False)
    device = next(model.parameters()).device
    batch = []
    for path in images:
        try:
            with Image.open(path) as img:
                batch.append(tf(img.convert("RGB")))
        except (OSError, ValueError) as e:
            raise ConfigError(f"Cannot read image '{path}': {e}") from None
    x = torch.stack(batch).to(device)
    out = []
    for name, task in model.tasks.items():
        model.set_active(name)
        probs = model(x).float().softmax(-1)
        p, i = probs.topk(min(topk, probs.shape[1]), dim=1)
        for path, pr, ix in zip(images, p.tolist(), i.tolist(), strict=True):
            out.append({"image": str(path), "task": name, "top": [(task.classes[j], q) for q, j in zip(pr, ix)]})
    return out
