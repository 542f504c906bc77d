"""DoRA (Liu et al., 2024) through Hugging Face PEFT: LoRA with a learned magnitude per output unit.

``W' = m * (W + s B A) / ||W + s B A||`` (the norm per output unit, i.e. per row of a timm Linear weight), with
LoRA's init (B = 0) and ``m = ||W||``, so the model starts at the backbone's logits. PEFT's
``LoraConfig(use_dora=True)``; everything else (the options' meaning, the target regex, multi-task sets, the
merge through PEFT's ``merge``, the PEFT folder export) is :mod:`.lora`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..config_checks import parse_placement
from .flops import StepFlops, ViTGeometry
from .lora import LoraMethod, LoraOptions, _linears
from .registry import register_method

__all__ = ["DoraMethod", "DoraOptions"]


@dataclass
class DoraOptions(LoraOptions):
    """DoRA's options (YAML/CLI ``dora.*``): LoRA's (:class:`~.lora.LoraOptions`), rank 8 by default (METHODS.md).

    Args:
        rank: rank r of the low-rank update (1 <= r <= min(in, out) of every adapted linear).
        alpha: output scale ``lora_alpha / r`` (the adapters' meaning of alpha).
        dropout: dropout on the layer input of the low-rank branch.
        placement: blocks whose projections are adapted: all, every:K, first:N, last:N or indices.
        targets: ``qkv`` or ``qkv+mlp`` (also fc1, fc2).
    """

    rank: int = 8
    peft_extra: ClassVar[dict[str, Any]] = {"use_dora": True}


class DoraMethod(LoraMethod):
    """DoRA (PEFT ``use_dora=True``) on the attention qkv (``targets: qkv+mlp``: also fc1/fc2). Default size:
    rank 8 on qkv, per block 8 x 768 (A) + 2304 x 8 (B) + 2304 (magnitude) = 26,880; 322,560 on ViT-B/16."""

    name = "dora"
    description = "DoRA (PEFT): LoRA on qkv plus a learned per-output-unit weight magnitude + new linear head"
    options = DoraOptions

    def step_flops(self, geom: ViTGeometry, options: DoraOptions) -> StepFlops:
        """LoRA's matmuls per image, plus once per step and adapted linear (k -> n) PEFT's ``B A`` for the weight
        norm, as ``B(A(I_k))``: ``2 k k r + 2 k r n`` forward FLOPs (the norm is detached: no backward)."""
        k_n = [geom.linear_shape(linear) for linear in _linears(options)]
        blocks = len(parse_placement(options.placement, geom.depth))
        norms = blocks * sum(2 * k * options.rank * (k + n) for k, n in k_n)
        return replace(super().step_flops(geom, options), per_step=norms)

    def trainable_params(self, geom: ViTGeometry, options: DoraOptions, num_classes: int) -> int:
        magnitudes = len(parse_placement(options.placement, geom.depth)) * sum(
            geom.linear_shape(linear)[1] for linear in _linears(options)
        )  # one per output unit of each adapted linear
        return super().trainable_params(geom, options, num_classes) + magnitudes


register_method(DoraMethod())
