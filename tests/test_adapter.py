"""The adapter method (methods/adapter/): exact identity at init, frozen backbone, counts, state dicts, the fused
residual path."""

import pytest
import torch

from adaptertune import (
    AdapterConfig,
    CheckpointError,
    ConfigError,
    adapter_param_count,
    adapter_state_dict,
    add_adapters,
    disable_adapters,
    list_adapter_sets,
    load_adapter_state_dict,
    remove_adapters,
    set_active,
    trainable_parameters,
)
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.adapter import adapted_blocks

PLACEMENTS = ["all", "every:2", "every:5", "first:3", "last:1", "last:6", [0, 5, 11], "3,7"]
X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("init", ["zero"])
def test_logits_bitwise_equal_at_init(tiny_vit, placement, init):
    model = tiny_vit()
    base = model(X)
    add_adapters(model, AdapterConfig(rank=8, placement=placement, init=init))
    assert torch.equal(model(X), base)


def test_random_init_changes_logits_and_small_barely(tiny_vit):
    base = tiny_vit()(X)
    rand = add_adapters(tiny_vit(), AdapterConfig(rank=8, init="random"))(X)
    small = add_adapters(tiny_vit(), AdapterConfig(rank=8, init="small"))(X)
    assert not torch.equal(rand, base)
    assert not torch.equal(small, base)
    assert (small - base).abs().max() < (rand - base).abs().max()


# methods whose init is not the identity by design (METHODS.md): Houlsby's and Adapter+'s non-zero up-projections,
# SSF's N(1, 0.02) scales, VPT's prompts that every token attends to
NOT_AT_PRETRAINED = {"adapter-plus", "houlsby", "ssf", "vpt-deep", "vpt-shallow"}


@pytest.mark.parametrize("method", METHODS.names())
def test_zero_init_methods_start_at_pretrained_logits(tiny_vit, method):
    """Every registered method but NOT_AT_PRETRAINED starts from the pretrained function (the head is the same new
    head); those do not."""
    model = tiny_vit()
    base = model(X)
    build_method(method, model, None)
    assert torch.equal(model.eval()(X), base) is (method not in NOT_AT_PRETRAINED)


def test_training_changes_only_adapters_and_head(tiny_vit):
    torch.manual_seed(0)
    model = add_adapters(tiny_vit(num_classes=5), AdapterConfig(rank=4, placement="every:3"))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(X), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    params = dict(model.named_parameters())
    for n, v in frozen.items():
        assert torch.equal(params[n], v), n
        assert params[n].grad is None, n
    for n, v in trained.items():
        assert not torch.equal(params[n], v), n
    assert any(".adapters." in n for n in trained) and any(n.startswith("head.") for n in trained)


@pytest.mark.parametrize(
    "placement,n_blocks", [("all", 12), ("every:2", 6), ("every:5", 3), ("last:4", 4), ([1, 2], 2)]
)
@pytest.mark.parametrize("rank", [1, 16])
def test_trainable_count_matches_formula(tiny_vit, placement, n_blocks, rank):
    model = add_adapters(tiny_vit(num_classes=7), AdapterConfig(rank=rank, placement=placement))
    d = 192
    assert trainable_parameters(model).trainable == n_blocks * (2 * d * rank + rank + d) + d * 7 + 7
    assert adapter_param_count(n_blocks, d, rank) == n_blocks * (2 * d * rank + rank + d)


def test_backbone_state_dict_keys_unchanged_and_plain_checkpoint_loads(tiny_vit):
    plain = tiny_vit()
    keys = set(plain.state_dict())
    model = add_adapters(tiny_vit(seed=1), AdapterConfig(rank=4))
    new_keys = set(model.state_dict())
    assert keys <= new_keys
    assert all(".adapters." in k for k in new_keys - keys)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".adapters." in k for k in missing)
    set_active(model, None)
    assert torch.equal(model(X), plain(X))


def test_timm_features_keep_working(tiny_vit):
    model = add_adapters(tiny_vit(), AdapterConfig(rank=4, init="random"))
    feats = model.forward_features(X)
    assert torch.equal(model.forward_head(feats), model(X))
    model.set_grad_checkpointing(True)
    model.train()
    out = model(X)
    out.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".adapters." in n)
    model.reset_classifier(3)
    assert model(X).shape == (4, 3)
    assert model.get_classifier().weight.requires_grad


def test_adapter_state_dict_round_trip_exact(tiny_vit):
    torch.manual_seed(0)
    a = add_adapters(tiny_vit(num_classes=5), AdapterConfig(rank=8, placement="last:3", init="random"))
    with torch.no_grad():
        a.head.weight.normal_()
    sd = adapter_state_dict(a)
    assert set(sd) == {
        f"adapters.{i}.{m}.{t}" for i in (9, 10, 11) for m in ("down", "up") for t in ("weight", "bias")
    } | {"head.weight", "head.bias"}
    b = add_adapters(tiny_vit(num_classes=5), AdapterConfig(rank=8, placement="last:3"))
    assert not torch.equal(a(X), b(X))
    load_adapter_state_dict(b, sd)
    assert torch.equal(a(X), b(X))


@pytest.mark.parametrize(
    "other,match",
    [
        (dict(rank=4), "rank mismatch: the file has rank 8, the model rank 4"),
        (dict(placement="last:2"), "placement mismatch"),
    ],
)
def test_load_mismatch_is_clear(tiny_vit, other, match):
    sd = adapter_state_dict(add_adapters(tiny_vit(), AdapterConfig(rank=8, placement="last:3")))
    model = add_adapters(tiny_vit(), AdapterConfig(**{"rank": 8, "placement": "last:3", **other}))
    with pytest.raises(CheckpointError, match=match):
        load_adapter_state_dict(model, sd)


def test_load_from_other_backbone_names_width(tiny_vit):
    import timm

    small = timm.create_model("vit_small_patch16_224", img_size=32, patch_size=4, depth=12, num_classes=10)
    sd = adapter_state_dict(add_adapters(small, AdapterConfig(rank=8)))
    with pytest.raises(CheckpointError, match="width d=384, the model has d=192"):
        load_adapter_state_dict(add_adapters(tiny_vit(), AdapterConfig(rank=8)), sd)


def test_rank_larger_than_width_is_error(tiny_vit):
    with pytest.raises(ConfigError, match="larger than the backbone width 192"):
        add_adapters(tiny_vit(), AdapterConfig(rank=193))


def test_placement_out_of_range_is_error(tiny_vit):
    with pytest.raises(ConfigError, match="out of range"):
        add_adapters(tiny_vit(), AdapterConfig(placement=[12]))


def test_several_sets_switch_exactly_and_remove(tiny_vit):
    torch.manual_seed(0)
    model = tiny_vit()
    base = model(X)
    add_adapters(model, AdapterConfig(rank=4, init="random"), name="a")
    out_a = model(X)
    add_adapters(model, AdapterConfig(rank=2, placement="last:2", init="random"), name="b")
    out_b = model(X)
    assert list_adapter_sets(model) == ["a", "b"] and adapted_blocks(model) == [10, 11]
    set_active(model, "a")
    assert torch.equal(model(X), out_a)
    disable_adapters(model)
    assert torch.equal(model(X), base)
    set_active(model, "b")
    assert torch.equal(model(X), out_b)
    remove_adapters(model, "b")
    assert torch.equal(model(X), base)  # removed set was active: nothing active now
    remove_adapters(model, "a")
    assert list_adapter_sets(model) == [] and not any("adapters" in k for k in model.state_dict())
    assert all(len(b._forward_hooks) == 0 for b in model.blocks)


def test_deepcopy_keeps_adapters_independent(tiny_vit):
    import copy

    model = add_adapters(tiny_vit(), AdapterConfig(rank=4, init="random"))
    clone = copy.deepcopy(model)
    assert torch.equal(clone(X), model(X))
    with torch.no_grad():
        clone.blocks[0].adapters["default"].up.weight.zero_()
    assert not torch.equal(clone(X), model(X))


def _block_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """The dtype of every block's output in one forward (hooks registered after the adapters' run last)."""
    dtypes: list[torch.dtype] = []
    handles = [b.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype)) for b in model.blocks]
    try:
        model(X)
    finally:
        for h in handles:
            h.remove()
    return dtypes


@pytest.mark.parametrize("method", ["adapter", "parallel"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_start_is_exact_under_autocast_and_keeps_the_stream_dtype(tiny_vit, method, dtype):
    """Under autocast (bf16: the CUDA default) the adapted model at init computes the plain model's logits
    bitwise and every block outputs the plain block's dtype (the fp32 residual stream stays fp32)."""
    model = tiny_vit()
    with torch.autocast("cpu", dtype=dtype):
        base, base_dtypes = model(X), _block_dtypes(model)
        build_method(method, model, AdapterConfig(rank=8))
        model.eval()
        got, got_dtypes = model(X), _block_dtypes(model)
    assert got_dtypes == base_dtypes and base_dtypes[-1] == torch.float32
    assert got.dtype == base.dtype and torch.equal(got, base)


@pytest.mark.parametrize("scaling, expected", [("constant", 2.0), ("rsqrt", 2.0 / 4), ("inverse", 2.0 / 16)])
def test_scaling_multiplies_the_adapter_output_by_its_rule(tiny_vit, scaling, expected):
    """``adapter.scaling`` sets the output scale (alpha, alpha/sqrt(r), alpha/r); the update is that multiple of
    the unit-scale adapter's, and zero init still starts exactly at the backbone."""
    cfg = AdapterConfig(rank=16, alpha=2.0, scaling=scaling, init="random")
    assert cfg.scale == pytest.approx(expected)
    torch.manual_seed(0)
    model = tiny_vit()
    build_method("adapter", model, cfg)
    (a,) = [m for m in model.modules() if type(m).__name__ == "Adapter"][:1]
    h = torch.randn(2, 5, a.dim)
    unit = a.up(a.act(a.down(h)))
    torch.testing.assert_close(a(h), expected * unit)
    zero = tiny_vit()
    base = zero.eval()(X)
    build_method("adapter", zero, AdapterConfig(rank=16, alpha=2.0, scaling=scaling))
    assert torch.equal(zero.eval()(X), base)


def test_unknown_scaling_is_a_clear_error():
    with pytest.raises(ConfigError, match="adapter.scaling.*constant.*rsqrt"):
        AdapterConfig(scaling="sqrt")


def test_frozen_parts_get_no_grad_and_build_no_graph():
    """Frozen weights get no .grad, and blocks before the first adapter record no autograd graph at all."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=3)
    build_method("adapter", model, AdapterConfig(rank=4, placement="last:2"))
    seen = {}
    for i, b in enumerate(model.blocks):
        b.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].requires_grad))
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    # inputs of blocks 0..2 (block 2 is the first adapted one: its own compute needs no graph either)
    assert seen == {0: False, 1: False, 2: False, 3: True}
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
        assert p.requires_grad == (".adapters." in n or n.startswith("head.")), n


def test_adapter_fast_path_matches_reference_formula():
    from adaptertune.methods.adapter import Adapter

    torch.manual_seed(0)
    h = torch.randn(2, 5, 8)
    for alpha in (1.0, 0.5):
        a = Adapter(8, 3, alpha=alpha, init="random")
        expected = h + alpha * a.up(torch.nn.functional.gelu(a.down(h)))
        assert torch.allclose(a.residual(h), expected, atol=1e-6)
        assert torch.allclose(a(h), expected - h, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("input_grad", [True, False])
def test_fused_residual_adapter_matches_module_path(alpha, input_grad):
    from adaptertune.methods.adapter import Adapter

    torch.manual_seed(0)
    a = Adapter(8, 3, alpha=alpha, init="random")
    h = torch.randn(2, 5, 8, requires_grad=input_grad)
    g = torch.randn(2, 5, 8)
    fused = a.residual(h)
    assert fused.grad_fn is not None and "ResidualAdapter" in type(fused.grad_fn).__name__
    fused.backward(g)
    grads = [p.grad.clone() for p in a.parameters()] + ([h.grad.clone()] if input_grad else [])
    a.zero_grad()
    h.grad = None
    ref = h + alpha * a.up(torch.nn.functional.gelu(a.down(h)))
    ref.backward(g)
    ref_grads = [p.grad for p in a.parameters()] + ([h.grad] if input_grad else [])
    assert torch.allclose(fused, ref, atol=1e-6)
    for x, y in zip(grads, ref_grads):
        assert torch.allclose(x, y, atol=1e-5)


def test_fused_residual_adapter_gradcheck():
    from adaptertune.methods.adapter.layer import _ResidualAdapter

    torch.manual_seed(0)
    args = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((2, 3, 4), (2, 4), (2,), (4, 2), (4,))]
    assert torch.autograd.gradcheck(lambda *t: _ResidualAdapter.apply(*t, 0.7), args)
