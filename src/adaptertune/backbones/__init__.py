"""Backbone registry and factory.

A registered backbone is a name plus timm model kwargs (variants are data). Any other timm ViT-family
model name works too. Weights come from the hub (timm), a local file (``weights=``), or nothing
(``pretrained=False``, seeded random init). When pretrained weights are asked for and cannot be had the
factory raises :class:`WeightsUnavailableError`; it never falls back to random weights.
"""

from __future__ import annotations

from .factory import BACKBONES, BackboneInfo, BuiltBackbone, create_backbone, register_backbone, weights_sha256

__all__ = ["BACKBONES", "BackboneInfo", "BuiltBackbone", "create_backbone", "register_backbone", "weights_sha256"]

from . import dinov2_offline, timm_vit  # noqa: E402,F401  (register the built-in entries)
