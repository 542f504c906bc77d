"""LoRA (Hu et al., 2021) through Hugging Face PEFT, on the attention qkv (and optionally MLP) projections.

``W x  ->  W x + (alpha_lora / r) * B A x`` with ``B = 0`` at init (PEFT's default), so the model starts at
the pretrained logits. The adapter options map as: ``rank`` -> ``r``; ``alpha`` is the output scale, the
same meaning as for adapters (PEFT's ``lora_alpha = alpha * r``, so ``lora_alpha / r = alpha``);
``dropout`` -> ``lora_dropout``; ``placement`` -> the blocks adapted; ``targets`` -> ``qkv`` or
``qkv+mlp`` (also ``mlp.fc1``, ``mlp.fc2``). The classifier head is a plain trainable module, not wrapped
by PEFT. PEFT is an optional extra (``pip install 'adaptertune[peft]'``), imported here only.

In a multi-task model each task is a named PEFT adapter on the shared layers; ``activate`` switches the
layers' active adapter (or disables them all). Export merges the update into the base weights.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config_checks import _as_choice, _as_float, _as_int, _as_probability, _check_placement_syntax, parse_placement
from ..errors import CheckpointError, ConfigError
from ..extras import require
from ..vit import backbone_blocks, head_parameter_names
from .flops import BlockCost, StepFlops, ViTGeometry, count_step, low_rank, placed
from .registry import Method, register_method
from .slots import DEFAULT_SET, copy_set_tensors

__all__ = [
    "LORA_TARGETS",
    "LoraMethod",
    "LoraOptions",
    "add_lora",
    "is_lora_model",
    "lora_config",
    "merge_lora",
    "save_peft_folder",
]

_TARGETS = {"qkv": ("attn.qkv",), "qkv+mlp": ("attn.qkv", "mlp.fc1", "mlp.fc2")}
LORA_TARGETS = tuple(_TARGETS)  # the projections LoRA adapts: attention qkv, optionally MLP fc1/fc2


@dataclass
class LoraOptions:
    """LoRA's options (YAML/CLI ``adapter.*``).

    Args:
        rank: LoRA rank r (1 <= r <= min(in, out) of every adapted linear).
        alpha: output scale ``lora_alpha / r`` (the adapters' meaning of alpha).
        dropout: LoRA dropout on the layer input.
        placement: blocks whose projections are adapted: all, every:K, first:N, last:N or indices.
        targets: ``qkv`` or ``qkv+mlp`` (also fc1, fc2).
    """

    rank: int = 16
    alpha: float = 1.0
    dropout: float = 0.0
    placement: str | list[int] = "all"
    targets: str = "qkv"
    peft_extra: ClassVar[dict[str, Any]] = {}  # more LoraConfig arguments (a subclass's: DoRA's use_dora)

    def __post_init__(self) -> None:
        self.rank = _as_int("adapter.rank", self.rank, minimum=1)
        self.alpha = _as_float("adapter.alpha", self.alpha, minimum=0.0)
        self.dropout = _as_probability("adapter.dropout", self.dropout)
        self.placement = _check_placement_syntax(self.placement)
        self.targets = _as_choice("adapter.targets", self.targets, LORA_TARGETS)


def _peft() -> Any:
    return require("peft", "Method 'lora'")


def lora_config(model: nn.Module, adapter: LoraOptions) -> Any:
    """The PEFT ``LoraConfig`` for ``adapter`` on ``model`` (module names matched by a full regex)."""
    peft = _peft()
    blocks = parse_placement(adapter.placement, len(backbone_blocks(model)))
    prefix = next(n for n, m in model.named_modules() if m is backbone_blocks(model))
    mods = "|".join(map(re.escape, _TARGETS[adapter.targets]))
    pattern = rf"{re.escape(prefix)}\.({'|'.join(map(str, blocks))})\.({mods})"
    return peft.LoraConfig(
        r=adapter.rank,
        lora_alpha=adapter.alpha * adapter.rank,
        lora_dropout=adapter.dropout,
        target_modules=pattern,
        bias="none",
        init_lora_weights=True,  # A: Kaiming-uniform, B: zero
        **adapter.peft_extra,
    )


def add_lora(model: nn.Module, adapter: LoraOptions | None = None, name: str = "default") -> nn.Module:
    """Inject LoRA set ``name`` into ``model`` in place; only LoRA weights and the head stay trainable."""
    adapter = adapter or LoraOptions()
    cfg = lora_config(model, adapter)
    for n, m in model.named_modules():
        if any(n.endswith(t) for t in _TARGETS[adapter.targets]) and isinstance(m, nn.Linear):
            if adapter.rank > min(m.in_features, m.out_features):
                raise ConfigError(
                    f"`adapter.rank` {adapter.rank} is larger than '{n}' ({m.in_features}->{m.out_features})."
                )
    _peft().inject_adapter_in_model(cfg, model, adapter_name=name)
    head = set(head_parameter_names(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head or any(f".lora_{t}.{name}." in n for t in ("A", "B", "magnitude_vector")))
    return model


def is_lora_model(model: nn.Module) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return any(isinstance(m, LoraLayer) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight and put the plain ``nn.Linear`` back (in place).

    The same steps as PEFT's ``LoraModel.merge_and_unload`` (``layer.merge()``, then replace the layer by
    ``layer.get_base_layer()``), for a model whose LoRA layers were injected without a PeftModel wrapper.
    """
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge(safe_merge=True)  # raises on NaN/inf merged weights
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    return model


def save_peft_folder(
    model: nn.Module, base: nn.Module, adapter: LoraOptions, directory: str, base_model_id: str
) -> None:
    """Write ``model``'s LoRA tensors and head as a PEFT folder (``adapter_config.json`` +
    ``adapter_model.safetensors``) through PEFT's own ``get_peft_model`` / ``save_pretrained``; the head is a
    ``modules_to_save`` module. ``base`` (a fresh backbone with the same head size) becomes the PeftModel."""
    peft = _peft()
    cfg = lora_config(base, adapter)
    heads = sorted({n.rpartition(".")[0] for n in head_parameter_names(base)})  # ["head"]
    cfg.modules_to_save = heads
    wrapped = peft.get_peft_model(base, cfg)
    wrapped.peft_config["default"].base_model_name_or_path = base_model_id  # what the folder adapts
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    own = dict(wrapped.named_parameters())
    with torch.no_grad():
        for n, v in trained.items():
            mod, _, leaf = n.rpartition(".")
            key = f"base_model.model.{mod}.modules_to_save.default.{leaf}" if mod in heads else f"base_model.model.{n}"
            if key not in own:
                raise CheckpointError(f"The PEFT model has no tensor '{key}' for the run's '{n}'.")
            own[key].copy_(v)
    wrapped.save_pretrained(directory, safe_serialization=True)


def _set_active(model: nn.Module, name: str | None) -> None:
    """Run LoRA set ``name`` on every LoRA layer that has it; every other layer (all, for None) runs plain."""
    from peft.tuners.lora import LoraLayer

    for layer in (m for m in model.modules() if isinstance(m, LoraLayer)):
        on = name is not None and name in layer.lora_A
        if on:
            layer.set_adapter(name)
        layer.enable_adapters(on)
    for p in model.parameters():
        p.requires_grad_(False)  # set_adapter makes the active set trainable


class LoraMethod(Method):
    name = "lora"
    description = "LoRA (PEFT) on attention qkv (targets=qkv+mlp: also MLP fc1/fc2) + new linear head"
    options = LoraOptions
    shares_backbone = True
    plain_after_merge = True  # merge folds B A into the base weights
    peft_format = True

    def build(self, model: nn.Module, options: LoraOptions) -> nn.Module:
        return add_lora(model, options)

    def attach(
        self, backbone: nn.Module, task: str, options: LoraOptions, tensors: dict[str, torch.Tensor], source: str
    ) -> None:
        with warnings.catch_warnings():  # PEFT warns that a second adapter set is being added: that is the point
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            add_lora(backbone, options, name=task)
        own = {k: p for k, p in backbone.named_parameters() if f".{task}." in k and ".lora_" in k}
        try:
            copy_set_tensors(own, tensors, f".{DEFAULT_SET}.", f".{task}.", "LoRA")
        except CheckpointError as e:
            self.detach(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        _set_active(backbone, task)

    def detach(self, backbone: nn.Module, task: str) -> None:
        from peft.functional import delete_adapter

        delete_adapter(backbone, task, prefix="lora_")

    def merge(self, model: nn.Module) -> bool:
        if not is_lora_model(model):
            return False
        merge_lora(model)
        return True

    def save_peft(
        self, model: nn.Module, base: nn.Module, options: LoraOptions, directory: str, base_model_id: str
    ) -> None:
        save_peft_folder(model, base, options, directory, base_model_id)

    def step_flops(self, geom: ViTGeometry, options: LoraOptions) -> StepFlops:
        cost = BlockCost(extras=tuple(low_rank(geom, linear, options.rank) for linear in _linears(options)))
        return count_step(geom, placed(geom, parse_placement(options.placement, geom.depth), cost))

    def trainable_params(self, geom: ViTGeometry, options: LoraOptions, num_classes: int) -> int:
        per_block = sum(options.rank * sum(geom.linear_shape(linear)) for linear in _linears(options))
        return len(parse_placement(options.placement, geom.depth)) * per_block + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: LoraOptions) -> int:
        return min(parse_placement(options.placement, len(backbone_blocks(model))))


def _linears(options: LoraOptions) -> list[str]:
    return [t.rpartition(".")[2] for t in _TARGETS[options.targets]]  # attn.qkv -> qkv


register_method(LoraMethod())
