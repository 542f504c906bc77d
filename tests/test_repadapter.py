"""RepAdapter (methods/repadapter.py): zero-init linear adapters before attention and the MLP; exact start, and a
merge into qkv / fc1 that leaves the plain timm architecture with the same logits."""

import json

import pytest
import timm
import torch

from adaptertune.cli import main
from adaptertune.errors import ConfigError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.flops import vit_geometry
from adaptertune.methods.repadapter import RepAdapter, RepAdapterOptions, repadapter_param_count
from helpers import TINY_VIT_TIMM, flop_counter, trainable_names
from petl_checks import VARIANTS, X, resume_runs, tasks_share_a_backbone, variant_vit

# the default suite runs the plain ViT; the other variants with -m slow
VARIANT_PARAMS = ["cls", *(pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS if v != "cls")]


def random_steps(model: torch.nn.Module, n: int = 3) -> None:
    """A few AdamW steps on a random objective, so every branch is non-zero."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(n):
        opt.zero_grad()
        model(X).pow(2).mean().backward()
        opt.step()
    model.eval()


def test_trainable_parameters_on_vit_b_match_methods_md():
    model = build_method("repadapter", timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100))
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == 239_808 + 76_900 == repadapter_param_count(12, 768, 8) + 76_900


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_starts_bitwise_at_the_backbone_fp32_and_bf16(variant):
    plain, model = variant_vit(variant), build_method("repadapter", variant_vit(variant), None)
    assert {k for k in model.state_dict() if ".repadapter_" not in k} == set(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(model(X), plain(X))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(X), plain(X))


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_merge_gives_plain_timm_with_the_same_logits(variant):
    model = build_method("repadapter", variant_vit(variant), {"scale": 0.5})
    random_steps(model)
    assert model.blocks[0].repadapter_attn["default"].B.weight.abs().sum() > 0
    with torch.no_grad():
        want = model(X)
        assert METHODS.get("repadapter").merge(model)
        plain = variant_vit(variant, seed=1)
        plain.load_state_dict(model.state_dict())  # strict: exactly timm's keys
        diff = float((plain(X) - want).abs().max())
    print(f"repadapter merge ({variant}): max |logit diff| {diff:.3g}")
    assert diff <= 1e-5, diff
    assert not METHODS.get("repadapter").merge(model)  # nothing left
    assert "timm" in METHODS.get("repadapter").export_formats()


def test_the_grouped_conv_is_the_block_diagonal_matrix():
    ad = RepAdapter(12, 4, groups=2, scale=2.0, dropout=0.0)
    with torch.no_grad():
        for p in ad.parameters():
            p.normal_()
        h = torch.randn(3, 5, 12)
        m, c = ad.as_affine()
        torch.testing.assert_close(ad(h).double(), h.double() @ m.T + c, rtol=1e-5, atol=1e-5)
        # output rows 0..5 of B read only bottleneck inputs 0..1, rows 6..11 only inputs 2..3
        b_only = (m - torch.eye(12, dtype=torch.float64)) / 2.0  # B A
        w = ad.B.weight.double()[..., 0]
        want = torch.cat([w[:6] @ ad.A.weight.double()[:2], w[6:] @ ad.A.weight.double()[2:]])
        torch.testing.assert_close(b_only, want)


def test_options_and_trainable_tensors():
    with pytest.raises(ConfigError, match="multiple of `repadapter.groups`"):
        RepAdapterOptions(rank=5, groups=2)
    model = build_method("repadapter", variant_vit(), {"placement": [11]})
    names = trainable_names(model)
    slots = ("repadapter_attn", "repadapter_mlp")
    tensors = ("A.weight", "A.bias", "B.weight", "B.bias")
    assert names == [*(f"blocks.11.{s}.default.{t}" for s in slots for t in tensors), "head.weight", "head.bias"]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    random_steps(model, 1)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert METHODS.get("repadapter").defaults == {"lr": 1e-3, "weight_decay": 1e-4}


def test_cost_formulas_match_the_built_model():
    """Placement and groups change the FLOPs as torch's counter sees them (B: a grouped 1x1 convolution, whose
    weight gradient the counter needs corrected: helpers.flop_counter), the
    trainable tensors as the formula says, and the cache prefix ends at the first placed block."""
    info = METHODS.get("repadapter")
    options = info.resolve({"rank": 8, "groups": 4, "placement": "last:2"})
    model = build_method("repadapter", variant_vit(), options).train()
    for b in model.blocks:
        b.attn.fused_attn = False  # the counter sees the math attention's matmuls
    geom = vit_geometry(model)
    with flop_counter() as fc:
        torch.nn.functional.cross_entropy(model(X), torch.tensor([0, 1])).backward()
    assert fc.get_total_flops() == 2 * info.step_flops(geom, options).total
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert info.trainable_params(geom, options, 10) == n == 2 * 2 * (192 * 8 + 8 + 192 * 2 + 192) + 193 * 10
    assert info.frozen_prefix(model, options) == 10


def test_export_as_a_timm_folder(tiny_run, tmp_path):
    run_dir, model = tiny_run(tmp_path / "rep", "repadapter", {"rank": 4}, backbone=TINY_VIT_TIMM)
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--format", "timm", "--out", str(out)]) == 0
    exported = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert float((exported(X) - model(X)).abs().max()) <= 1e-5


def test_two_tasks_share_a_backbone_exactly(tiny_run, tmp_path):
    specs = {"a": ("repadapter", {"rank": 4}), "b": ("repadapter", {"placement": "last:3", "scale": 5.0})}
    mt, _, want = tasks_share_a_backbone(tiny_run, tmp_path, specs, ["a", "b", "a"])
    with torch.no_grad():
        mt.remove_task("a")
        mt.set_active("b")
        assert torch.equal(mt(X), want["b"])


def test_resume_after_one_epoch_is_bitwise(tmp_path):
    # 14 train images, batch 7: 2 steps per epoch; stopped in epoch 2, after the epoch-1 checkpoint; dropout draws
    # from the restored RNG
    options = {"rank": 4, "placement": "last:3", "dropout": 0.5}
    ta, tb, _ = resume_runs(tmp_path, "repadapter", options, n_classes=2, stop_at=3, train={"batch_size": 7})
    assert ta.keys() == tb.keys() and any(".B.weight" in k and ta[k].any() for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "success"
