"""Backbone sources (backbones/sources.py): backbones named as timm names them, loaded by timm's real
``pretrained=True`` path from disk (no mocks).

A Hugging Face cache is built on disk as ``huggingface_hub`` lays it out (``models--ORG--NAME/{blobs,snapshots,
refs}``) and found through ``HF_HUB_CACHE`` with ``HF_HUB_OFFLINE=1``; a ``local-dir:`` folder holds timm's own
``save_for_hf`` output (``config.json`` + ``model.safetensors``). The "pretrained" weights are a seeded random
tiny ViT (32 px, patch 4), so a loaded backbone is checked tensor for tensor against them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptertune import BackboneConfig, UnknownNameError, WeightsUnavailableError, create_backbone
from adaptertune.backbones import resolve_backbone, weights_sha256
from adaptertune.cli import main
from helpers import HUB_REVISION, TINY_VIT_TIMM, add_to_hub_cache, save_timm_folder, sha256

# Hub repos and weight tags are timm names: the tiny ViT goes by its timm name here, with its kwargs
TINY_ARGS = TINY_VIT_TIMM["args"]
MEAN = [0.25, 0.5, 0.75]


@pytest.fixture(scope="module")
def source_vit(tiny_vit):
    return tiny_vit(num_classes=7, seed=11)


@pytest.fixture(scope="module")
def exported(source_vit, tmp_path_factory) -> Path:
    folder = save_timm_folder(source_vit, tmp_path_factory.mktemp("export") / "tiny-vit")
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["mean"] = MEAN  # a data config only this repo has
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def same_backbone(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return weights_sha256(a) == weights_sha256(b) and torch.equal(
        a.blocks[5].mlp.fc2.weight, b.blocks[5].mlp.fc2.weight
    )


def test_hf_hub_name_loads_from_the_cache_with_its_config(hub_cache, exported, source_vit):
    snapshot = add_to_hub_cache(hub_cache, "timm/tiny-vit-test", exported)
    built = create_backbone(BackboneConfig(name="hf-hub:timm/tiny-vit-test"), num_classes=4, seed=0)
    assert same_backbone(built.model, source_vit)
    assert built.model.head.weight.shape == (4, 192)  # a new head: the saved one has 7 classes
    assert built.data_config["input_size"] == (3, 32, 32)  # model_args of config.json: img_size 32, patch 4
    assert list(built.data_config["mean"]) == MEAN  # from the repo's pretrained_cfg
    assert built.weights_tag == "hf-hub:timm/tiny-vit-test"
    assert built.weights_source == {
        "kind": "hf-hub",
        "repo": "timm/tiny-vit-test",
        "revision": HUB_REVISION,
        "file": str(snapshot / "model.safetensors"),
        "file_sha256": sha256(exported / "model.safetensors"),
    }


def test_registry_name_with_tag_loads_from_the_cache(hub_cache, exported, source_vit):
    add_to_hub_cache(hub_cache, "timm/vit_tiny_patch16_224.augreg_in21k", exported)
    cfg = BackboneConfig(name="vit_tiny_patch16_224.augreg_in21k", args=TINY_ARGS)
    built = create_backbone(cfg, num_classes=5, seed=0)
    assert same_backbone(built.model, source_vit)
    assert built.weights_tag == "timm:vit_tiny_patch16_224.augreg_in21k"
    assert built.weights_source["repo"] == "timm/vit_tiny_patch16_224.augreg_in21k"
    assert built.weights_source["revision"] == HUB_REVISION
    assert built.weights_source["file_sha256"] == sha256(exported / "model.safetensors")
    # the same name without its cache entry: the one-line error of today, never random weights
    with pytest.raises(
        WeightsUnavailableError, match="Cannot load pretrained weights for 'vit_tiny_patch16_224.augreg"
    ):
        create_backbone(BackboneConfig(name="vit_tiny_patch16_224.augreg_in21k_ft_in1k", args=TINY_ARGS), 5)


def test_local_dir_loads_timm_folder(exported, source_vit):
    built = create_backbone(BackboneConfig(name=f"local-dir:{exported}"), num_classes=3, seed=0)
    assert same_backbone(built.model, source_vit)
    assert built.weights_tag == f"local-dir:{exported}"
    assert built.weights_source == {
        "kind": "local-dir",
        "path": str(exported.resolve()),
        "file": str(exported / "model.safetensors"),
        "file_sha256": sha256(exported / "model.safetensors"),
    }
    # --no-pretrained keeps the folder's architecture and draws a seeded random init
    rand = create_backbone(BackboneConfig(name=f"local-dir:{exported}", pretrained=False), num_classes=3, seed=0)
    assert rand.data_config["input_size"] == (3, 32, 32) and not same_backbone(rand.model, source_vit)
    assert rand.weights_source == {"kind": "random-init", "seed": 0}


def test_weights_file_records_its_path_and_hash(tmp_path, source_vit):
    from safetensors.torch import save_file

    save_file(source_vit.state_dict(), tmp_path / "w.safetensors")
    built = create_backbone(BackboneConfig(name="test_vit", weights=str(tmp_path / "w.safetensors")), 5)
    assert built.weights_source == {
        "kind": "file",
        "file": str((tmp_path / "w.safetensors").resolve()),
        "file_sha256": sha256(tmp_path / "w.safetensors"),
    }


def test_missing_sources_are_one_line_errors(hub_cache, tmp_path, exported):
    for pretrained in (True, False):  # config.json is needed even for a random init
        with pytest.raises(WeightsUnavailableError, match="'hf-hub:timm/not-cached'.*HF_HUB_CACHE") as e:
            create_backbone(BackboneConfig(name="hf-hub:timm/not-cached", pretrained=pretrained), 3)
        assert "\n" not in str(e.value)
        with pytest.raises(WeightsUnavailableError, match="config.json") as e:
            create_backbone(BackboneConfig(name=f"local-dir:{tmp_path / 'nowhere'}", pretrained=pretrained), 3)
        assert "\n" not in str(e.value)
    no_weights = tmp_path / "config-only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((exported / "config.json").read_text())
    with pytest.raises(WeightsUnavailableError, match="Cannot load pretrained weights .*No suitable checkpoints"):
        create_backbone(BackboneConfig(name=f"local-dir:{no_weights}"), 3)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("timm/vit_tiny_patch16_224", "Use 'hf-hub:timm/vit_tiny_patch16_224'"),
        ("s3-bucket:timm/x", "valid sources: hf-hub, local-dir"),
        ("hf-hub:", "no model id"),
        ("not_a_model", "hf-hub:ORG/NAME and local-dir:PATH"),
        ("vit_tiny_patch16_224.no_such_tag", "has no weight tag 'no_such_tag'.*augreg_in21k"),
    ],
)
def test_bad_names_are_unknown_names(name, match):
    with pytest.raises(UnknownNameError, match=match):
        resolve_backbone(name)


def test_sweep_validation_accepts_source_names():
    from adaptertune.sweeps.runner import validate_config

    base = {"backbone": {"pretrained": False}, "data": {"name": "imagefolder", "root": "x"}, "method": "head"}
    for name in (
        "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k",
        "local-dir:/models/vit",
        "vit_tiny_patch16_224.augreg_in21k",
    ):
        assert validate_config({**base, "backbone": {"name": name}}) is None
    assert "UnknownNameError" in validate_config({**base, "backbone": {"name": "timm/vit_tiny_patch16_224"}})


def test_cli_train_and_eval_from_the_hub_cache(hub_cache, exported, source_vit, image_folder, tmp_path, capsys):
    add_to_hub_cache(hub_cache, "timm/tiny-vit-test", exported)
    out = tmp_path / "run"
    args = ["train", "--backbone", "hf-hub:timm/tiny-vit-test", "--dataset", "imagefolder", "--data-root"]
    args += [str(image_folder), "--method", "head", "--epochs", "1", "--batch-size", "16"]
    args += ["--num-workers", "0", "--quiet", "--out-dir", str(out)]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "success" and s["backbone"] == "hf-hub:timm/tiny-vit-test"
    assert s["weights_sha256"] == weights_sha256(source_vit)  # the cached weights, not a random init
    assert s["weights_source"]["kind"] == "hf-hub" and s["weights_source"]["revision"] == HUB_REVISION
    assert s["weights_source"]["file_sha256"] == sha256(exported / "model.safetensors")
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "-"]) == 0  # rebuilt from the same cache, hash checked
    r = json.loads(capsys.readouterr().out)
    assert r["test_acc"] == pytest.approx(s["test_acc"]) == pytest.approx(r["recorded_test_acc"])


@pytest.mark.slow
def test_cli_subprocess_reads_hf_hub_cache_from_the_environment(tmp_path, exported, source_vit, image_folder):
    cache = tmp_path / "hf-cache"
    add_to_hub_cache(cache, "timm/tiny-vit-test", exported)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "adaptertune", "train", "--backbone", "hf-hub:timm/tiny-vit-test", "--method"]
    cmd += ["head", "--dataset", "imagefolder", "--data-root", str(image_folder), "--epochs", "1"]
    cmd += ["--num-workers", "0", "--quiet", "--out-dir", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["weights_sha256"] == weights_sha256(source_vit)
    assert s["weights_source"]["file"] == str(
        cache / "models--timm--tiny-vit-test" / "snapshots" / HUB_REVISION / "model.safetensors"
    )
    env.pop("HF_HUB_CACHE")  # the default cache under the empty HF_HOME: one line on stderr, exit 2
    r = subprocess.run(cmd + ["--overwrite"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Cannot read the model config" in r.stderr
