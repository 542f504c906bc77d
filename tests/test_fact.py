"""FacT-TT and FacT-TK (methods/fact.py): shared U, V (V = 0) with per-block (TT) or Tucker (TK) cores on qkv,
proj, fc1 and fc2; exact start, merge into the plain timm weights, shared-backbone tasks."""

import json

import pytest
import timm
import torch

from adaptertune.cli import main
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.fact import FactSets, FactTK, FactTT, fact_param_count, tk_core_flops
from adaptertune.methods.flops import vit_geometry
from helpers import TINY_VIT_TIMM, flop_counter, trainable_names
from petl_checks import VARIANTS, X, resume_runs, tasks_share_a_backbone, variant_vit

# the default suite runs the plain ViT; the other variants with -m slow
VARIANT_PARAMS = ["cls", *(pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS if v != "cls")]
METHOD_NAMES = ("fact-tt", "fact-tk")


def random_steps(model: torch.nn.Module, n: int = 3) -> None:
    """A few AdamW steps on a random objective, so U, V and the cores all move."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(n):
        opt.zero_grad()
        model(X).pow(2).mean().backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def vit_b_sizes():
    out = {}
    for name in METHOD_NAMES:
        model = build_method(name, timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100))
        out[name] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return out


def test_trainable_parameters_on_vit_b_match_methods_md(vit_b_sizes):
    assert vit_b_sizes["fact-tt"] == 21_504 + 76_900 == fact_param_count("tt", 12, 768, 8) + 76_900
    assert vit_b_sizes["fact-tk"] == 30_976 + 76_900 == fact_param_count("tk", 12, 768, 16) + 76_900
    assert fact_param_count("tt", 12, 768, 8) == 1536 * 8 + 144 * 8**2
    assert fact_param_count("tk", 12, 768, 16) == 1536 * 16 + 144 * 16 + 16**3
    assert fact_param_count("tk", 6, 384, 4) == 768 * 4 + 72 * 4 + 4**3  # another depth and width


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_starts_bitwise_at_the_backbone_fp32_and_bf16(method, variant):
    plain, model = variant_vit(variant), build_method(method, variant_vit(variant), None)
    assert {k for k in model.state_dict() if not k.startswith("fact.")} == set(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(model(X), plain(X))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(X), plain(X))


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_merge_gives_plain_timm_with_the_same_logits(method, variant):
    model = build_method(method, variant_vit(variant), {"scale": 0.5})
    random_steps(model)
    assert model.fact["default"].V.weight.abs().sum() > 0
    with torch.no_grad():
        want = model(X)
        assert METHODS.get(method).merge(model)
        plain = variant_vit(variant, seed=1)
        plain.load_state_dict(model.state_dict())  # strict: exactly timm's keys
        diff = float((plain(X) - want).abs().max())
    print(f"{method} merge ({variant}): max |logit diff| {diff:.3g}")
    assert diff <= 1e-5, diff
    assert not METHODS.get(method).merge(model) and not hasattr(model, "fact")
    assert "timm" in METHODS.get(method).export_formats()


@pytest.mark.parametrize("kind", [FactTT, FactTK])
def test_updates_are_the_written_formula(kind):
    """qkv gets [V Cq U h; V Ck U h; V Cv U h]; fc2 gets V sum_m C_m U x_m; TK's cores are Core x Pm."""
    torch.manual_seed(0)
    f = kind(dim=6, depth=2, k=4, rank=3, scale=0.7, dropout=0.0)
    with torch.no_grad():
        f.V.weight.normal_()
        h, x = torch.randn(5, 6), torch.randn(5, 24)
        u, vw = f.U.weight, f.V.weight
        if kind is FactTK:
            cores = torch.einsum("abi,ij->jab", f.core, f.factors[:, 12:24])  # block 1's 12 cores, u -> u @ C_j
        else:
            cores = [w.T for w in f.blocks[1].qkv.chunk(3)] + [f.blocks[1].proj.T] + [None] * 4
            cores += [w.T for w in f.blocks[1].fc2.chunk(4, dim=1)]
        want_qkv = torch.cat([0.7 * (h @ u.T @ cores[j]) @ vw.T for j in range(3)], dim=-1)
        torch.testing.assert_close(f.delta(1, "qkv", h), want_qkv)
        want_fc2 = 0.7 * sum(x[:, 6 * m : 6 * m + 6] @ u.T @ cores[8 + m] for m in range(4)) @ vw.T
        torch.testing.assert_close(f.delta(1, "fc2", x), want_fc2)
        for site, inp in (("qkv", h), ("fc1", h), ("fc2", x), ("proj", h)):
            torch.testing.assert_close(f.delta(1, site, inp).double(), inp.double() @ f.delta_weight(1, site).T)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_only_fact_tensors_and_head_train(method):
    model = build_method(method, variant_vit(), None)
    names = trainable_names(model)
    assert names[:2] == ["head.weight", "head.bias"] and all(n.startswith("fact.default.") for n in names[2:])
    if method == "fact-tk":
        assert names[2:] == [
            "fact.default.core",
            "fact.default.factors",
            "fact.default.U.weight",
            "fact.default.V.weight",
        ]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    random_steps(model, 1)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert METHODS.get(method).defaults == {"lr": 1e-3, "weight_decay": 1e-4}


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_cost_formulas_match_the_built_model(method):
    """At batch 1 and 2 torch's counter sees batch x the per-image formula, plus (TK) the cores built once per step;
    the parameter formula counts the trainable tensors; nothing before block 0 is frozen."""
    info = METHODS.get(method)
    options = info.resolve({"rank": 4})
    model = build_method(method, variant_vit(), options).train()
    for b in model.blocks:
        b.attn.fused_attn = False  # the counter sees the math attention's matmuls
    geom = vit_geometry(model)
    flops = info.step_flops(geom, options)
    assert flops.per_step == (tk_core_flops(geom, options) if method == "fact-tk" else 0)
    assert flops.per_step in (0, 6 * 4**3 * 12 * 12)
    for batch in (1, 2):
        with flop_counter() as fc:
            torch.nn.functional.cross_entropy(
                model(X[:1].repeat(batch, 1, 1, 1)), torch.zeros(batch).long()
            ).backward()
        assert fc.get_total_flops() == flops.scaled(batch).total == batch * flops.total + flops.per_step
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert info.trainable_params(geom, options, 10) == n == fact_param_count(method[-2:], 12, 192, 4) + 193 * 10
    assert info.frozen_prefix(model, options) == 0


def test_export_as_a_timm_folder(tiny_run, tmp_path):
    run_dir, model = tiny_run(tmp_path / "tk", "fact-tk", {"rank": 4}, backbone=TINY_VIT_TIMM)
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--format", "timm", "--out", str(out)]) == 0
    exported = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert float((exported(X) - model(X)).abs().max()) <= 1e-5


def test_tt_and_tk_tasks_share_a_backbone_exactly(tiny_run, tmp_path):
    specs = {"a": ("fact-tt", {"rank": 4}), "b": ("fact-tk", {"rank": 6, "scale": 0.5}), "c": ("fact-tt", {"rank": 2})}
    mt, _, want = tasks_share_a_backbone(tiny_run, tmp_path, specs, ["a", "b", "c", "a", "c"])
    with torch.no_grad():
        for name in ["a", "b"]:
            mt.remove_task(name)
        mt.set_active("c")
        assert torch.equal(mt(X), want["c"])
        mt.remove_task("c")
        assert FactSets.of(mt.backbone) is None  # the last set takes the container and its hooks with it
        assert not any(m._forward_hooks for m in mt.backbone.modules())


def test_resume_after_one_epoch_is_bitwise(tmp_path):
    # 14 train images, batch 7: 2 steps per epoch; stopped in epoch 2, after the epoch-1 checkpoint; dropout draws
    # from the restored RNG
    options = {"rank": 4, "dropout": 0.5}
    ta, tb, _ = resume_runs(tmp_path, "fact-tk", options, n_classes=2, stop_at=3, train={"batch_size": 7})
    assert ta.keys() == tb.keys() and ta["fact.default.V.weight"].any()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "success"
