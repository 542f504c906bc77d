"""Export folders other tools open: PEFT (``PeftModel.from_pretrained``) and timm (``local-dir:``), with model cards.

The PEFT folder is loaded the way a user would, onto ``timm.create_model(NAME, pretrained=True, num_classes=C)``
with NAME a Hub name served from a Hugging Face cache on disk (``HF_HUB_OFFLINE=1``): no mocks.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml

from adaptertune.cli import main
from adaptertune.cli.export import FORMATS
from adaptertune.errors import ConfigError
from adaptertune.export import EXPORT_FORMATS, export_run
from adaptertune.runs import RunStatus, load_run
from adaptertune.runs import folder as rf
from helpers import TINY_VIT_TIMM, add_to_hub_cache, save_timm_folder

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def run_logits(run_dir) -> torch.Tensor:
    with torch.no_grad():
        return load_run(run_dir, device="cpu").model(X)


def test_peft_folder_loads_onto_the_hub_backbone_with_the_runs_logits(tiny_vit, tiny_run, hub_cache, tmp_path):
    from peft import PeftModel

    add_to_hub_cache(
        hub_cache, "timm/tiny-vit-test", save_timm_folder(tiny_vit(num_classes=7, seed=3), tmp_path / "s")
    )
    backbone = {"name": "hf-hub:timm/tiny-vit-test", "pretrained": True}
    run_dir, _ = tiny_run(tmp_path / "lora", "lora", {"rank": 4, "targets": "qkv+mlp"}, backbone=backbone)
    r = export_run(run_dir, "peft")
    folder = run_dir / "export-peft"
    assert r.path == str(folder) and {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    base = timm.create_model("hf-hub:timm/tiny-vit-test", pretrained=True, num_classes=4)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        diff = float((model(X) - run_logits(run_dir)).abs().max())
    print(f"PEFT load: max |logit diff| {diff:.3g}")
    assert diff <= 1e-5
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "timm/tiny-vit-test"
    meta = front_matter((folder / "README.md").read_text())
    assert meta["base_model"] == "timm/tiny-vit-test" and meta["library_name"] == "peft"
    assert meta["datasets"] == ["imagefolder"] and meta["metrics"] == ["accuracy"]
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 50.0


@pytest.mark.parametrize(
    ("method", "adapter"), [("head", None), ("bitfit", None), ("lora", {"rank": 4}), ("full", None)]
)
def test_timm_folder_loads_with_local_dir_and_the_runs_logits(tiny_run, tmp_path, method, adapter):
    # the tiny ViT by its timm name: config.json names the timm architecture the run trained
    run_dir, _ = tiny_run(tmp_path / method, method, adapter, backbone=TINY_VIT_TIMM)
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--format", "timm", "--out", str(out)]) == 0
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        diff = float((model(X) - run_logits(run_dir)).abs().max())
    print(f"timm load ({method}): max |logit diff| {diff:.3g}")
    assert diff <= 1e-4
    assert not any("lora" in k for k in model.state_dict())
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 4
    assert config["label_names"] == ["c0", "c1", "c2", "c3"] and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    meta = front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "timm" and "base_model" not in meta  # random init: no Hub weights


@pytest.mark.parametrize(("method", "fmt"), [("adapter", "timm"), ("parallel", "peft"), ("head", "peft")])
def test_formats_a_method_cannot_take_are_one_line_errors(tiny_run, tmp_path, method, fmt):
    run_dir, _ = tiny_run(tmp_path / method, method, {"rank": 2} if method != "head" else None)
    with pytest.raises(
        ConfigError, match=rf"Method '{method}' cannot be exported as '{fmt}'.*use one of: pt, onnx"
    ) as e:
        export_run(run_dir, fmt)
    assert "\n" not in str(e.value) and not (run_dir / f"export-{fmt}").exists()


def test_sweep_point_card_reports_the_cells_mean_and_std(tiny_run, tmp_path):
    accs = {0: 40.0, 1: 60.0}
    for seed, acc in accs.items():
        run_dir, _ = tiny_run(tmp_path / "sweep" / f"seed={seed}", "head", seed=seed)
        rf.write_point(run_dir, f"seed={seed}", {"train.seed": seed})
        summary = json.loads((run_dir / "summary.json").read_text())
        summary.update(test_acc=acc, status=RunStatus.SUCCESS.value)
        (run_dir / "summary.json").write_text(json.dumps(summary))
    r = export_run(tmp_path / "sweep" / "seed=0", "timm")
    card = open(r.sidecar).read()
    metric = front_matter(card)["model-index"][0]["results"][0]["metrics"][0]
    assert metric["value"] == 50.0 and metric["std"] == pytest.approx(14.1421, abs=1e-3)
    assert "50.00 ± 14.14 (mean ± std over 2 runs of its cell)" in card


def test_cli_lists_the_export_formats():
    assert FORMATS == EXPORT_FORMATS
