"""Export folders that timm and PEFT open, each with a model card (``README.md``) for ``huggingface-cli upload``.

``timm``: ``config.json`` (architecture, num_classes, label_names, model_args, pretrained_cfg) +
``model.safetensors``, written by timm's own ``save_for_hf`` after the method folds its modules into the
backbone (its registry ``merge``); ``timm.create_model("local-dir:DIR", pretrained=True)`` loads it.
``peft``: ``adapter_config.json`` + ``adapter_model.safetensors`` written by PEFT's ``save_pretrained`` (the
method's ``save_peft``); ``PeftModel.from_pretrained(timm.create_model(NAME, pretrained=True, num_classes=C), DIR)``
loads it. Either folder is loaded back the way a user would and its logits compared with the trained model's
on seeded inputs before it replaces ``DIR``; a mismatch above ``atol`` leaves nothing behind.

The card, ``config.json`` (``adaptertune_weights``) and the PEFT ``base_model_name_or_path`` name the backbone
weights the run loaded, from its summary (:func:`run_weights`): a Hub id only when the weights came from the Hub.
The card and ``config.json`` (``adaptertune_preprocessing``, and ``pretrained_cfg`` set to the run's eval transform)
spell out the input preprocessing (:mod:`adaptertune.data.preprocessing`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write_text
from .backbones import create_backbone
from .backbones.sources import weights_record
from .data.preprocessing import eval_data_config, preprocessing_spec
from .errors import AdapterTuneError
from .extras import require
from .methods import METHODS
from .model_card import card_accuracy, model_card
from .runs import LoadedRun

__all__ = ["FOLDER_FORMATS", "ExportError", "base_model_id", "export_folder", "run_weights"]

FOLDER_FORMATS = ("timm", "peft")


class ExportError(AdapterTuneError):
    """The exported model does not reproduce the training-time logits."""


def run_weights(loaded: LoadedRun) -> dict[str, Any]:
    """The run's backbone weights as its summary records them (:func:`.backbones.sources.weights_record`)."""
    s = loaded.summary
    return weights_record(s.get("weights_tag") or "", s.get("weights_sha256") or "", s.get("weights_source") or {})


def base_model_id(loaded: LoadedRun) -> str:
    """The Hub id the run's backbone weights came from (``timm/NAME.TAG``), else the backbone name as configured
    (weights from a file, a folder, a registered loader or a random init have no Hub id)."""
    return run_weights(loaded)["hub_id"] or loaded.config.backbone.name


def _usage(library: str, loaded: LoadedRun, directory: Path) -> str:
    if library == "timm":
        return f'import timm\n\nmodel = timm.create_model("local-dir:{directory}", pretrained=True).eval()'
    b, n = loaded.config.backbone, len(loaded.classes)
    if run_weights(loaded)["hub_id"] is None:  # timm alone cannot build these weights: adaptertune's factory does
        return (
            "from adaptertune import BackboneConfig, create_backbone\nfrom peft import PeftModel\n\n"
            f"backbone = BackboneConfig(**{dataclasses.asdict(b)!r})\n"
            f"base = create_backbone(backbone, num_classes={n}, seed={loaded.config.train.seed}).model\n"
            f'model = PeftModel.from_pretrained(base, "{directory}").eval()'
        )
    args = "".join(f", {k}={v!r}" for k, v in b.args.items())
    return (
        "import timm\nfrom peft import PeftModel\n\n"
        f'base = timm.create_model("{b.name}", pretrained={b.pretrained}, num_classes={n}{args})\n'
        f'model = PeftModel.from_pretrained(base, "{directory}").eval()'
    )


def _fresh_backbone(loaded: LoadedRun) -> nn.Module:
    """The run's backbone as built before training (same weights, fresh head of the run's size)."""
    cfg = loaded.config
    return create_backbone(cfg.backbone, num_classes=len(loaded.classes), seed=cfg.train.seed).model


def _write_timm(loaded: LoadedRun, tmp: Path) -> tuple[Callable[[], nn.Module], bool]:
    from timm.models import save_for_hf

    model = loaded.model.cpu().eval()
    merged = METHODS.get(loaded.config.method).merge(model)
    save_for_hf(model, str(tmp), model_config={"label_names": list(loaded.classes)}, safe_serialization=True)
    _name_weights(tmp / "config.json", run_weights(loaded))
    _describe_inputs(tmp / "config.json", loaded)

    def load() -> nn.Module:
        import timm

        return timm.create_model(f"local-dir:{tmp}", pretrained=True)

    return load, merged


# pretrained_cfg fields that describe the timm registry's weights for the architecture, not necessarily the loaded ones
_REGISTRY_PROVENANCE = ("tag", "license", "description", "origin_url", "paper_name", "paper_ids", "notes")


def _name_weights(path: Path, weights: dict[str, Any]) -> None:
    """Record the loaded weights in timm's ``config.json``: the whole record under ``adaptertune_weights``, and
    for weights not from the Hub a ``pretrained_cfg`` tag and description of their own in place of the
    architecture's registry entry (its tag, licence, origin and paper are another checkpoint's)."""
    config = json.loads(path.read_text())
    if weights["hub_id"] is None:
        pretrained = config.setdefault("pretrained_cfg", {})
        for key in _REGISTRY_PROVENANCE:
            pretrained.pop(key, None)
        about = weights["source"].get("description")
        pretrained["tag"] = weights["tag"]
        pretrained["description"] = f"{weights['name']}: {about}" if about else weights["name"]
    config["adaptertune_weights"] = weights
    atomic_write_text(path, json.dumps(config, indent=2))


def _describe_inputs(path: Path, loaded: LoadedRun) -> None:
    """Make ``config.json``'s ``pretrained_cfg`` give the run's own eval transform (timm's ``resolve_data_config``
    + ``create_transform`` read it: a ``squash`` run is crop_mode squash, not the backbone's centre crop), and
    add every step written out under ``adaptertune_preprocessing``."""
    resize = loaded.config.data.resize
    config = json.loads(path.read_text())
    config.setdefault("pretrained_cfg", {}).update(eval_data_config(loaded.data_config, resize))
    config["adaptertune_preprocessing"] = preprocessing_spec(loaded.data_config, resize)
    atomic_write_text(path, json.dumps(config, indent=2))


def _write_peft(loaded: LoadedRun, tmp: Path, base_id: str) -> Callable[[], nn.Module]:
    cfg = loaded.config
    method = METHODS.get(cfg.method)
    options = method.resolve(cfg.method_options)
    method.save_peft(loaded.model.cpu(), _fresh_backbone(loaded), options, str(tmp), base_id)

    def load() -> nn.Module:
        peft = require("peft", "Loading the PEFT folder back")
        return peft.PeftModel.from_pretrained(_fresh_backbone(loaded), str(tmp))

    return load


def export_folder(
    loaded: LoadedRun, run_dir: Path, fmt: str, out: Path, example: torch.Tensor, ref: torch.Tensor, atol: float
) -> tuple[float, bool]:
    """Write run ``loaded`` as a ``fmt`` folder at ``out``; return (max |logit diff| of the folder as loaded
    back, whether the method merged its modules into the backbone). ``ref``: the trained model's logits on
    ``example``."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    base_id = base_model_id(loaded)
    try:
        load, merged = _write_timm(loaded, tmp) if fmt == "timm" else (_write_peft(loaded, tmp, base_id), False)
        with torch.no_grad():
            got = load().eval()(example)
        diff = float((got.float() - ref.float()).abs().max())
        if not diff <= atol:
            raise ExportError(
                f"The {fmt} folder differs from the trained model: max |logit diff| {diff:.3g} > {atol:g}."
            )
        accuracy = card_accuracy(run_dir, loaded.summary)
        card = model_card(
            library=fmt,
            weights=run_weights(loaded),
            config=loaded.config.to_dict(),
            summary=loaded.summary,
            classes=list(loaded.classes),
            accuracy=accuracy,
            usage=_usage(fmt, loaded, out),
            max_abs_diff=diff,
            preprocessing=preprocessing_spec(loaded.data_config, loaded.config.data.resize),
        )
        atomic_write_text(tmp / "README.md", card)  # replaces PEFT's own template card
        if out.exists():
            if not out.is_dir() or any(p.name not in _OWN_FILES for p in out.iterdir()):
                raise AdapterTuneError(f"'{out}' exists and is not an export folder; choose another --out.")
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return diff, merged


_OWN_FILES = {"README.md", "config.json", "model.safetensors", "adapter_config.json", "adapter_model.safetensors"}
