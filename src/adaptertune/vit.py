"""What a timm ViT is made of: its input, patch embedding, transformer blocks, token width and classifier;
the stages its forward runs in; parameter counts.

Backbones, methods and the engine read a model's structure through these functions, so the one place that knows
timm's attribute names (``patch_embed``, ``blocks``, ``embed_dim``, ``num_features``, ``get_classifier``,
``_pos_embed``, ``forward_head``) is this module. Imports torch and errors only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .errors import ConfigError

__all__ = [
    "ParamCount",
    "PatchTokens",
    "ViTParts",
    "backbone_blocks",
    "backbone_width",
    "classifier",
    "embed_tokens",
    "embedding_parts",
    "feature_width",
    "head_parameter_names",
    "input_shape",
    "logits_from_tokens",
    "mlp_hidden_width",
    "patch_tokens",
    "pre_logits",
    "runs_in_stages",
    "trainable_parameters",
    "vit_parts",
]

_EMBED_MODULES = ("patch_embed", "patch_drop", "norm_pre", "pos_drop")  # what runs before the blocks
_EMBED_TENSORS = ("cls_token", "reg_token", "pos_embed")


def backbone_blocks(model: nn.Module) -> nn.Sequential | nn.ModuleList:
    """The transformer blocks of a timm ViT-family model (``model.blocks``)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        raise ConfigError(
            f"Model {type(model).__name__} has no `.blocks` sequence of transformer blocks; adaptertune supports "
            "timm ViT-family models (vit_*, deit_*, vit_*_dinov2, eva_*, ...)."
        )
    return blocks


def backbone_width(model: nn.Module) -> int:
    """Token width d of the residual stream."""
    for attr in ("embed_dim", "num_features"):
        d = getattr(model, attr, None)
        if isinstance(d, int) and d > 0:
            return d
    raise ConfigError(f"Cannot tell the token width of {type(model).__name__}: it has no `embed_dim`.")


def feature_width(model: nn.Module) -> int:
    """Width of the pre-logit features, the classifier's input (timm ``num_features``)."""
    d = getattr(model, "num_features", None)
    if not isinstance(d, int) or d <= 0:
        raise ConfigError(f"Cannot tell the feature width of {type(model).__name__}: it has no `num_features`.")
    return d


def mlp_hidden_width(model: nn.Module) -> int | None:
    """Hidden width of the first block's MLP (``blocks[0].mlp.fc1``); None when the blocks have no such MLP."""
    blocks = getattr(model, "blocks", None)
    fc1 = getattr(getattr(blocks[0], "mlp", None), "fc1", None) if blocks is not None and len(blocks) else None
    return fc1.out_features if isinstance(fc1, nn.Linear) else None


def classifier(model: nn.Module) -> nn.Module | None:
    """The classification head (timm ``get_classifier()``, else ``model.head``); None when there is none."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    return head if isinstance(head, nn.Module) else None


def head_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of the classifier's parameters (``get_classifier()`` in timm)."""
    head = classifier(model)
    if head is None:
        return []
    ids = {id(p) for p in head.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def input_shape(model: nn.Module) -> torch.Size | None:
    """(channels, height, width) of the images the patch embedding was built for; None when it does not say."""
    pe = getattr(model, "patch_embed", None)
    size, chans = getattr(pe, "img_size", None), getattr(getattr(pe, "proj", None), "in_channels", None)
    return torch.Size((chans, *size)) if size is not None and chans is not None else None


class PatchTokens(NamedTuple):
    """The tokens a ViT makes of one image."""

    patches: int  # patch tokens
    patch_dim: int  # inputs of one patch (channels * patch height * patch width)
    prefix: int  # class / register tokens before the patches


def patch_tokens(model: nn.Module) -> PatchTokens | None:
    """The tokens of one image, from a convolutional patch embedding; None when the model has none."""
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d):
        return None
    patch_dim = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
    return PatchTokens(model.patch_embed.num_patches, patch_dim, getattr(model, "num_prefix_tokens", 1))


def runs_in_stages(model: nn.Module) -> bool:
    """Whether ``forward_features`` can be run stage by stage (:func:`embed_tokens`, the blocks,
    :func:`logits_from_tokens`): a timm ``VisionTransformer`` with its blocks in an ``nn.Sequential``."""
    return isinstance(getattr(model, "blocks", None), nn.Sequential) and hasattr(model, "_pos_embed")


def embedding_parts(model: nn.Module) -> tuple[list[nn.Module], list[torch.Tensor]]:
    """What runs before the blocks: the modules (patch embedding, patch dropout, pre-norm, position dropout)
    and the tensors (class / register tokens, position embedding) the model has."""
    modules = [getattr(model, n) for n in _EMBED_MODULES if isinstance(getattr(model, n, None), nn.Module)]
    tensors = [getattr(model, n) for n in _EMBED_TENSORS if isinstance(getattr(model, n, None), torch.Tensor)]
    return modules, tensors


def embed_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) -> the tokens (B, T, D) block 0 takes, as ``forward_features`` computes them."""
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))


def logits_from_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's tokens (B, T, D) -> logits (B, C): the final norm, pooling and head."""
    return model.forward_head(model.norm(x))


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images -> the classifier's input (B, D): ``forward_head(forward_features(x), pre_logits=True)``."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


class ParamCount(NamedTuple):
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def trainable_parameters(model: nn.Module) -> ParamCount:
    """Trainable and total parameter counts (tied parameters counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return ParamCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


class ViTParts(NamedTuple):
    """The optional parameters of a timm ViT (what a parameter-count formula needs besides its widths)."""

    qkv_bias: bool  # attn.qkv has a bias
    patch_bias: bool  # the patch embedding's conv has a bias
    layer_scale: bool  # blocks scale their branches by a learned per-channel gamma (ls1, ls2)
    pos_tokens: int  # rows of the position embedding (0: none)
    norm_pre: bool  # a LayerNorm before the blocks


def vit_parts(model: nn.Module) -> ViTParts:
    """Which optional parameters ``model`` has, read off its patch embedding and its first block."""
    block = backbone_blocks(model)[0]
    qkv = getattr(getattr(block, "attn", None), "qkv", None)
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    pos = getattr(model, "pos_embed", None)
    return ViTParts(
        qkv_bias=getattr(qkv, "bias", None) is not None,
        patch_bias=getattr(proj, "bias", None) is not None,
        layer_scale=isinstance(getattr(getattr(block, "ls1", None), "gamma", None), torch.Tensor),
        pos_tokens=pos.shape[1] if isinstance(pos, torch.Tensor) else 0,
        norm_pre=any(True for _ in getattr(model, "norm_pre", nn.Identity()).parameters()),
    )
