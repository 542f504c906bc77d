"""LoRA (Hu et al., 2021) through Hugging Face PEFT, on the attention qkv (and optionally MLP) projections.

``W x  ->  W x + (alpha_lora / r) * B A x`` with ``B = 0`` at init (PEFT's default), so the model starts at
the pretrained logits. The adapter options map as: ``rank`` -> ``r``; ``alpha`` is the output scale, the
same meaning as for adapters (PEFT's ``lora_alpha = alpha * r``, so ``lora_alpha / r = alpha``);
``dropout`` -> ``lora_dropout``; ``placement`` -> the blocks adapted; ``targets`` -> ``qkv`` or
``qkv+mlp`` (also ``mlp.fc1``, ``mlp.fc2``). The classifier head is a plain trainable module, not wrapped
by PEFT. PEFT is an optional extra (``pip install 'adaptertune[peft]'``), imported here only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adapters import backbone_blocks, head_parameter_names
from ..config import AdapterConfig, parse_placement
from ..errors import ConfigError
from .registry import MethodInfo, register_method

__all__ = ["add_lora", "is_lora_model", "lora_config", "merge_lora"]

_TARGETS = {"qkv": ("attn.qkv",), "qkv+mlp": ("attn.qkv", "mlp.fc1", "mlp.fc2")}


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError(
            "Method 'lora' needs Hugging Face PEFT: pip install 'adaptertune[peft]' (or pip install peft)."
        ) from None
    return peft


def lora_config(model: nn.Module, adapter: AdapterConfig) -> Any:
    """The PEFT ``LoraConfig`` for ``adapter`` on ``model`` (module names matched by a full regex)."""
    peft = _peft()
    blocks = parse_placement(adapter.placement, len(backbone_blocks(model)))
    prefix = next(n for n, m in model.named_modules() if m is backbone_blocks(model))
    mods = "|".join(t.replace(".", r"\.") for t in _TARGETS[adapter.targets])
    pattern = rf"{prefix.replace('.', r'.')}\.({'|'.join(map(str, blocks))})\.({mods})"
    return peft.LoraConfig(
        r=adapter.rank,
        lora_alpha=adapter.alpha * adapter.rank,
        lora_dropout=adapter.dropout,
        target_modules=pattern,
        bias="none",
        init_lora_weights=True,  # A: Kaiming-uniform, B: zero
    )


def add_lora(model: nn.Module, adapter: AdapterConfig | None = None, name: str = "default") -> nn.Module:
    """Inject LoRA set ``name`` into ``model`` in place; only LoRA weights and the head stay trainable."""
    adapter = adapter or AdapterConfig()
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
        p.requires_grad_(n in head or f".lora_A.{name}." in n or f".lora_B.{name}." in n)
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


def build_lora(model: nn.Module, adapter: AdapterConfig | None) -> nn.Module:
    return add_lora(model, adapter)


register_method(
    MethodInfo(
        "lora",
        "LoRA (PEFT) on attention qkv (targets=qkv+mlp: also MLP fc1/fc2) + new linear head",
        build_lora,
        defaults={"lr": 1e-3, "weight_decay": 0.05},
        uses_adapter=True,
        adapter_options=frozenset({"rank", "alpha", "dropout", "placement", "targets"}),
    )
)
