"""The paper's three methods: head-only, full fine-tuning, AdapterTune."""

from __future__ import annotations

from torch import nn

from ..adapters import add_adapters, head_parameter_names
from ..config import AdapterConfig
from .registry import MethodInfo, register_method


def build_head(model: nn.Module, adapter: AdapterConfig | None) -> nn.Module:
    head = set(head_parameter_names(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head)  # the final norm stays frozen too
    return model


def build_full(model: nn.Module, adapter: AdapterConfig | None) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def build_adapter(model: nn.Module, adapter: AdapterConfig | None) -> nn.Module:
    return add_adapters(model, adapter)


# Paper: AdamW lr 1e-3, wd 0.05 for every method. Full fine-tuning of a pretrained ViT is unstable at 1e-3,
# so its default is 10x lower (as in the ViT/DeiT fine-tuning recipes).
register_method(
    MethodInfo(
        "head",
        "frozen backbone, new linear head (head-only transfer)",
        build_head,
        defaults={"lr": 1e-3, "weight_decay": 0.05},
    )
)
register_method(
    MethodInfo(
        "full", "full fine-tuning: every parameter trains", build_full, defaults={"lr": 1e-4, "weight_decay": 0.05}
    )
)
register_method(
    MethodInfo(
        "adapter",
        "AdapterTune: frozen backbone + zero-init residual low-rank adapters + head",
        build_adapter,
        defaults={"lr": 1e-3, "weight_decay": 0.05},
        uses_adapter=True,
        adapter_options=frozenset({"rank", "alpha", "init", "dropout", "placement", "act"}),
    )
)
