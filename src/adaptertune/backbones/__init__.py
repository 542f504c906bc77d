"""Backbone registry and factory.

A registered backbone is a name plus timm model kwargs (variants are data). Any other timm ViT-family
model name works too, spelled as timm spells it: a registry name with an optional weight tag
(``vit_small_patch16_224.augreg_in21k``), ``hf-hub:ORG/NAME`` or ``local-dir:PATH`` (a folder with timm's
``config.json`` and ``model.safetensors``). Weights come from the hub or its cache (timm), a local folder, a local
file (``weights=``), or nothing (``pretrained=False``, seeded random init); ``BuiltBackbone.weights_source``
records which file and its SHA-256. When pretrained weights are asked for and cannot be had the
factory raises :class:`WeightsUnavailableError`; it never falls back to random weights.
"""

from __future__ import annotations

from .factory import (
    BACKBONES,
    BackboneInfo,
    BuiltBackbone,
    create_backbone,
    register_backbone,
    resolve_backbone,
    weights_sha256,
)

__all__ = [
    "BACKBONES",
    "BackboneInfo",
    "BuiltBackbone",
    "create_backbone",
    "register_backbone",
    "resolve_backbone",
    "weights_sha256",
]

from . import dinov2_offline, timm_vit  # noqa: E402,F401  (register the built-in entries)
