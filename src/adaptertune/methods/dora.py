"""DoRA (Liu et al., 2024) through Hugging Face PEFT: LoRA with a learned magnitude per output unit.

``W' = m * (W + s B A) / ||W + s B A||`` (the norm per output unit, i.e. per row of a timm Linear weight), with
LoRA's init (B = 0) and ``m = ||W||``, so the model starts at the backbone's logits. PEFT's
``LoraConfig(use_dora=True)``; everything else (the options' meaning, the target regex, multi-task sets, the
merge through PEFT's ``merge``, the PEFT folder export) is :mod:`.lora`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .lora import LoraMethod, LoraOptions
from .registry import register_method

__all__ = ["DoraMethod", "DoraOptions"]


@dataclass
class DoraOptions(LoraOptions):
    """DoRA's options: LoRA's (:class:`~.lora.LoraOptions`), rank 8 by default (METHODS.md's size)."""

    rank: int = 8
    peft_extra: ClassVar[dict[str, Any]] = {"use_dora": True}


class DoraMethod(LoraMethod):
    """DoRA (PEFT ``use_dora=True``) on the attention qkv (``targets: qkv+mlp``: also fc1/fc2). Default size:
    rank 8 on qkv, per block 8 x 768 (A) + 2304 x 8 (B) + 2304 (magnitude) = 26,880; 322,560 on ViT-B/16."""

    name = "dora"
    description = "DoRA (PEFT): LoRA on qkv plus a learned per-output-unit weight magnitude + new linear head"
    options = DoraOptions

    def step_flops(self, geom: Any, options: DoraOptions) -> None:
        return None  # LoRA's count misses DoRA's weight norm per step; the FLOP counter's owner adds DoRA's


register_method(DoraMethod())
