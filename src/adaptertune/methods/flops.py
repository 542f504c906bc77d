"""Analytic matmul FLOPs of one training step of a timm ViT (pure arithmetic): what a method's formula uses.

Each registered method states its FLOP formula (:meth:`~adaptertune.methods.registry.Method.step_flops`) as a
call of :func:`count_step` that says what it trains; :func:`step_flops` looks it up by method name.

Only matrix products are counted (2 FLOPs per multiply-add), as in the PaLM / nanoGPT estimates: the patch
embedding, q/k/v, the two attention products, the output projection, the two MLP layers, adapters / LoRA and
the head. Norms, softmax, GELU and residual adds are left out (they are memory-bound, not FLOP-bound).

A step is forward + backward through activations + weight gradients, where

- a layer's input gradient is computed only when its input depends on something trained (autograd builds no
  graph before the first trained tensor: a frozen prefix costs its forward only);
- a weight gradient is computed only for trained weights.

So for ``y = x W^T`` (``m`` rows, ``k -> n``) the forward costs ``2mkn``, the input gradient ``2mkn`` if ``x``
needs a gradient, the weight gradient ``2mkn`` if ``W`` trains. The attention products ``QK^T`` and ``AV``
(``4 N^2 d`` forward) cost twice that backward (a gradient for each operand) once q/k/v need gradients.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..vit import backbone_blocks, backbone_width, classifier, mlp_hidden_width, patch_tokens

__all__ = [
    "LINEARS",
    "StepFlops",
    "ViTGeometry",
    "count_step",
    "flop_methods",
    "inference_flops",
    "step_flops",
    "vit_geometry",
]

LINEARS = ("qkv", "proj", "fc1", "fc2")


@dataclass(frozen=True)
class ViTGeometry:
    """What the FLOP count of a plain ViT depends on (one image).

    Args:
        depth: number of transformer blocks.
        dim: token width d.
        mlp_hidden: hidden width of the MLP.
        tokens: tokens per image in the blocks (patches + class/register tokens).
        patches: patch tokens (rows of the patch-embedding matmul).
        patch_dim: inputs of one patch (channels * patch height * patch width).
        num_classes: outputs of the head (0: no head).
    """

    depth: int
    dim: int
    mlp_hidden: int
    tokens: int
    patches: int
    patch_dim: int
    num_classes: int


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step for one image, split by where they are spent."""

    forward: int
    backward_activations: int
    backward_weights: int

    @property
    def total(self) -> int:
        return self.forward + self.backward_activations + self.backward_weights

    def scaled(self, n: int) -> StepFlops:
        return StepFlops(self.forward * n, self.backward_activations * n, self.backward_weights * n)


def vit_geometry(model: nn.Module) -> ViTGeometry:
    """Read the geometry of a timm ``VisionTransformer`` (attention + MLP blocks, conv patch embedding)."""
    tokens, mlp_hidden = patch_tokens(model), mlp_hidden_width(model)
    if tokens is None or mlp_hidden is None:
        raise ConfigError(
            f"Cannot count FLOPs of {type(model).__name__}: expected a timm VisionTransformer (patch_embed, "
            "blocks with attn.qkv and mlp.fc1/fc2)."
        )
    head = classifier(model)
    return ViTGeometry(
        depth=len(backbone_blocks(model)),
        dim=backbone_width(model),
        mlp_hidden=mlp_hidden,
        tokens=tokens.patches + tokens.prefix,
        patches=tokens.patches,
        patch_dim=tokens.patch_dim,
        num_classes=head.out_features if isinstance(head, nn.Linear) else 0,
    )


class _Counter:
    def __init__(self) -> None:
        self.fwd = self.act = self.wgt = 0

    def linear(self, m: int, k: int, n: int, trained: bool, in_grad: bool) -> bool:
        """``(m, k) @ (k, n)``; returns whether the output needs a gradient."""
        f = 2 * m * k * n
        self.fwd += f
        self.act += f if in_grad else 0
        self.wgt += f if trained else 0
        return in_grad or trained

    def attention(self, n_tok: int, d: int, in_grad: bool) -> bool:
        f = 2 * 2 * n_tok * n_tok * d  # QK^T and AV, all heads together
        self.fwd += f
        self.act += 2 * f if in_grad else 0
        return in_grad


def count_step(
    geom: ViTGeometry,
    *,
    full: bool = False,
    adapted: Iterable[int] = (),
    rank: int = 16,
    lora_linears: Iterable[str] = (),
    lora_blocks: Iterable[int] | None = None,
) -> StepFlops:
    """Matmul FLOPs of one training step for one image; the head always trains.

    Args:
        geom: the backbone's geometry.
        full: every backbone weight trains (full fine-tuning).
        adapted: blocks followed by a trained bottleneck ``W_up act(W_down h)`` of width ``rank`` (serial
            adapters; also AdaptFormer's, whose bottleneck on the MLP input costs the same).
        rank: bottleneck / LoRA rank.
        lora_linears: block linears (any of qkv, proj, fc1, fc2) with a trained ``x A^T B^T`` of rank ``rank``.
        lora_blocks: blocks whose ``lora_linears`` get LoRA (default: every block).

    Raises:
        ConfigError: a LoRA linear that is not one of :data:`LINEARS`.
    """
    lora = set(lora_linears)
    if lora - set(LINEARS):
        raise ConfigError(f"Unknown LoRA target(s) {sorted(lora - set(LINEARS))}; known: {', '.join(LINEARS)}.")
    lora_at = set(range(geom.depth) if lora_blocks is None else lora_blocks)
    adapted = set(adapted)
    d, n_tok, c = geom.dim, geom.tokens, _Counter()

    def block_linear(i: int, name: str, k: int, n: int, in_grad: bool) -> bool:
        out = c.linear(n_tok, k, n, full, in_grad)
        if name in lora and i in lora_at:  # x A^T B^T added to the frozen output
            c.linear(n_tok, k, rank, True, in_grad)
            out = c.linear(n_tok, rank, n, True, True)
        return out

    grad = c.linear(geom.patches, geom.patch_dim, d, full, False) or full  # cls/pos tokens train in full
    for i in range(geom.depth):
        qkv = block_linear(i, "qkv", d, 3 * d, grad)
        attn = c.attention(n_tok, d, qkv)
        grad = block_linear(i, "proj", d, d, attn) or grad  # residual: x + proj(...)
        hidden = block_linear(i, "fc1", d, geom.mlp_hidden, grad)
        grad = block_linear(i, "fc2", geom.mlp_hidden, d, hidden) or grad
        if i in adapted:  # h + W_up act(W_down h)
            c.linear(n_tok, d, rank, True, grad)
            grad = c.linear(n_tok, rank, d, True, True)
    if geom.num_classes:
        c.linear(1, d, geom.num_classes, True, grad)  # one pooled token per image
    return StepFlops(c.fwd, c.act, c.wgt)


def inference_flops(geom: ViTGeometry) -> StepFlops:
    """Matmul FLOPs of one forward of the plain backbone (and head) for one image."""
    return StepFlops(count_step(geom).forward, 0, 0)  # forward FLOPs do not depend on what trains


def flop_methods() -> list[str]:
    """Names of the registered methods that have a FLOP formula."""
    from . import METHODS  # the registry's Method.step_flops is typed with this module's dataclasses

    probe = ViTGeometry(depth=1, dim=4, mlp_hidden=4, tokens=2, patches=1, patch_dim=3, num_classes=2)
    return [m.name for m in METHODS if m.step_flops(probe, m.resolve(None)) is not None]


def step_flops(geom: ViTGeometry, method: str, options: Any = None) -> StepFlops:
    """Matmul FLOPs of one training step of registered ``method`` (with ``options``: None, a mapping or its
    dataclass): the method's own formula, :meth:`~adaptertune.methods.registry.Method.step_flops`.

    Raises:
        ConfigError: the method has no FLOP formula, or an option is bad.
    """
    from . import METHODS

    info = METHODS.get(method)
    flops = info.step_flops(geom, info.resolve(options))
    if flops is None:
        raise ConfigError(f"No FLOP formula for method '{method}'; known: {', '.join(flop_methods())}.")
    return flops
