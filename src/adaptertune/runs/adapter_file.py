"""Adapter files: ``adaptertune_weights.safetensors`` holds only the trained tensors plus metadata saying what
they fit.

The metadata (JSON under the safetensors key ``adaptertune``) records the backbone name and kwargs, the
weight tag and the SHA-256 of the backbone weights, the method, the adapter options (rank, alpha, init,
placement, ...), the adapted blocks, the width, the class names and the data config. Loading a file onto
a model that differs in any of the identity fields is a :class:`CheckpointError` naming both sides.
:func:`file_metadata` produces that metadata and :func:`check_adapter_file` checks it: nowhere else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import load_tensors
from ..errors import CheckpointError
from ..methods import METHODS
from ..methods.adapter import adapted_blocks
from ..vit import backbone_width

__all__ = [
    "IDENTITY_FIELDS",
    "check_adapter_file",
    "file_identity",
    "file_metadata",
    "read_adapter_file",
]

# field -> how the error names it
IDENTITY_FIELDS = {
    "backbone": "backbone",
    "backbone_args": "backbone arguments",
    "weights_sha256": "backbone weights (sha256)",
    "method": "method",
    "rank": "adapter rank",
    "placement": "adapter placement",
    "targets": "LoRA targets",
    "width": "backbone width",
}


def file_metadata(cfg: Any, built: Any, classes: list[str], model: nn.Module) -> dict[str, Any]:
    """The metadata of the adapter file of ``model``, built by ``cfg`` on backbone ``built``.

    Args:
        cfg: the resolved :class:`~adaptertune.config.RunConfig`.
        built: the :func:`~adaptertune.backbones.create_backbone` result (weights tag and hash, data config).
    """
    return {
        "backbone": cfg.backbone.name,
        "backbone_args": cfg.backbone.args,
        "backbone_config": dataclasses.asdict(cfg.backbone),
        "init_seed": cfg.train.seed,
        "weights_tag": built.weights_tag,
        "weights_sha256": built.weights_sha256,
        "method": cfg.method,
        "adapter": cfg.to_dict()["adapter"],  # the options as a mapping (dataclass or as read from config.yaml)
        "adapted_blocks": adapted_blocks(model) if cfg.adapter else [],
        "width": backbone_width(model),
        "classes": list(classes),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in built.data_config.items()},
    }


def file_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The identity fields of an adapter file's metadata (or of a model, in the same shape).

    Only the options the method has count: files that recorded every method's options (``targets`` for
    ``adapter``) identify by their own method's alone.
    """
    method = meta.get("method")
    own = set(METHODS.get(method).option_names()) if method in METHODS else None
    adapter = {k: v for k, v in (meta.get("adapter") or {}).items() if own is None or k in own}
    return {
        "backbone": meta.get("backbone"),
        "backbone_args": meta.get("backbone_args") or {},
        "weights_sha256": meta.get("weights_sha256"),
        "method": method,
        "rank": adapter.get("rank"),
        "placement": adapter.get("placement"),
        "targets": adapter.get("targets"),  # only LoRA's options have targets
        "width": meta.get("width"),
    }


def check_adapter_file(meta: dict[str, Any], expected: dict[str, Any], source: str, fields=None) -> None:
    """Raise CheckpointError at the first identity field where the file's ``meta`` and ``expected`` differ.

    ``expected`` has the metadata's shape (keys of :func:`file_identity`'s input); ``fields`` restricts the
    check (default: every identity field present in ``expected``).
    """
    have, want = file_identity(meta), file_identity(expected)
    for key in fields or IDENTITY_FIELDS:
        if want[key] is None and key not in ("rank", "placement", "targets"):
            continue
        if have[key] != want[key]:
            a, b = have[key], want[key]
            if key == "weights_sha256":
                a, b = (
                    f"{str(a)[:12]} (tag {meta.get('weights_tag')})",
                    f"{str(b)[:12]} (tag {expected.get('weights_tag')})",
                )
            raise CheckpointError(
                f"{source} does not fit this model: {IDENTITY_FIELDS[key]} differs: the file has {a!r}, "
                f"the model has {b!r}."
            )


def read_adapter_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of an adapter file; a file without adaptertune metadata is a CheckpointError."""
    tensors, meta = load_tensors(path)
    missing = [k for k in ("backbone", "weights_sha256", "method", "classes") if k not in meta]
    if missing:
        raise CheckpointError(f"'{path}' is not an adaptertune adapter file: its metadata lacks {', '.join(missing)}.")
    return tensors, meta
