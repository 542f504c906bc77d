"""DoRA through PEFT (methods/dora.py): LoRA's machinery with use_dora; exact start, merge, PEFT export."""

import pytest
import torch

from adaptertune.methods import METHODS, build_method
from adaptertune.methods.dora import DoraOptions
from adaptertune.methods.flops import StepFlops, ViTGeometry, step_flops, vit_geometry
from adaptertune.methods.lora import LoraOptions
from petl_checks import (
    HEAD_100,
    VARIANTS,
    X,
    counted_step_flops,
    frozen_unchanged_after_training,
    merge_to_plain_timm,
    n_trainable,
    resumed_equals_uninterrupted,
    train_steps,
    variant_vit,
    vit_b,
)

pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only fight over a busy machine


def test_dora_size_on_vit_b():
    """qkv at rank 8: A (8 x 768) + B (2304 x 8) + the magnitude (2304) per block."""
    assert DoraOptions().rank == 8 and LoraOptions().rank == 16  # each method's own default
    n = n_trainable(build_method("dora", vit_b(), None))
    assert n == 322_560 + HEAD_100 == 12 * (8 * 768 + 2304 * 8 + 2304) + HEAD_100


@pytest.mark.parametrize("variant", VARIANTS)
def test_starts_bitwise(variant):
    plain = variant_vit(variant)
    ref = plain(X)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_bf16 = plain(X)
    model = build_method("dora", variant_vit(variant), None)
    assert torch.equal(model(X), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(X), ref_bf16)


def test_what_trains():
    model = build_method("dora", variant_vit("cls"), DoraOptions(rank=2, targets="qkv+mlp", placement="last:2"))
    names = {n for n, p in model.named_parameters() if p.requires_grad} - {"head.weight", "head.bias"}
    want = {
        f"blocks.{i}.{m}.lora_{t}.default.weight"
        for i in (10, 11)
        for m in ("attn.qkv", "mlp.fc1", "mlp.fc2")
        for t in ("A", "B", "magnitude_vector")
    }
    assert names == want
    assert frozen_unchanged_after_training(model) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_merge_folds_into_plain_timm(variant):
    model = train_steps(build_method("dora", variant_vit(variant), None))
    assert merge_to_plain_timm("dora", model, variant) <= 1e-5


def test_resume_is_exact(tmp_path):
    assert resumed_equals_uninterrupted(tmp_path, "dora", {"rank": 2, "dropout": 0.1}) == []


def test_two_tasks_share_one_backbone(tiny_run, tmp_path):
    from adaptertune.multitask import MultiTaskModel

    runs = {"a": tiny_run(tmp_path / "a", "dora", None), "b": tiny_run(tmp_path / "b", "dora", {"rank": 4})}
    with torch.no_grad():
        want = {name: model(X) for name, (_, model) in runs.items()}
    mt = MultiTaskModel.from_files([d / "adaptertune_weights.safetensors" for d, _ in runs.values()], names=["a", "b"])
    with torch.no_grad():
        for name in ["a", "b", "a"]:
            mt.set_active(name)
            assert torch.equal(mt(X), want[name]), name


@pytest.mark.parametrize("fmt", ["peft", "timm"])
def test_exports_load_back_with_the_runs_logits(tiny_run, tmp_path, fmt):
    import timm
    from peft import PeftModel

    from adaptertune.backbones import create_backbone
    from adaptertune.export import export_run
    from adaptertune.runs.load import load_run
    from helpers import TINY_VIT_TIMM

    assert fmt in METHODS.get("dora").export_formats()
    run_dir, _ = tiny_run(tmp_path / "run", "dora", {"rank": 4}, backbone=TINY_VIT_TIMM)
    with torch.no_grad():
        want = load_run(run_dir, device="cpu").model(X)
    export_run(run_dir, fmt)
    folder = run_dir / f"export-{fmt}"
    if fmt == "peft":
        cfg = load_run(run_dir, device="cpu").config  # the backbone as built before training, a fresh head
        base = create_backbone(cfg.backbone, num_classes=4, seed=cfg.train.seed).model
        model = PeftModel.from_pretrained(base, str(folder)).eval()
        assert model.peft_config["default"].use_dora
    else:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        assert not any("lora" in k for k in model.state_dict())
    with torch.no_grad():
        assert float((model(X) - want).abs().max()) <= 1e-5


def test_flops_by_hand():
    """LoRA's matmuls per image, plus PEFT's ``B(A(I_k))`` for the weight norm once per step: on a one-block ViT
    (d=4, qkv 4 -> 12) at rank 2, 2*4*4*2 + 2*4*2*12 = 256 FLOPs whatever the batch."""
    g = ViTGeometry(depth=1, dim=4, mlp_hidden=8, tokens=3, patches=2, patch_dim=6, num_classes=2)
    lora, dora = step_flops(g, "lora", {"rank": 2}), step_flops(g, "dora", {"rank": 2})
    assert dora == StepFlops(lora.forward, lora.backward_activations, lora.backward_weights, per_step=256)
    assert dora.total == lora.total and dora.scaled(3).total == 3 * lora.total + 256


@pytest.mark.parametrize("options", [{"rank": 4, "placement": "last:1"}, {"targets": "qkv+mlp", "placement": "1,5"}])
def test_flops_match_torch_flop_counter(options):
    """A placement and the MLP targets (the defaults: tests/test_flops.py), exactly, the per-step norms included."""
    model = variant_vit("cls", num_classes=5)
    geom = vit_geometry(model)
    counted = counted_step_flops(build_method("dora", model, options))
    assert counted == step_flops(geom, "dora", options).scaled(2).total
    assert counted != 2 * step_flops(geom, "dora", options).total  # the per-step term is there to be counted
