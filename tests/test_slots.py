"""The slot base (methods/slots.py): named module sets on a backbone's blocks, their hooks kept and removed in one
place, the backbone's own keys untouched."""

import copy

import pytest
import torch
from torch import nn

from adaptertune.errors import CheckpointError, ConfigError
from adaptertune.methods import Method
from adaptertune.methods.adapter import AdapterConfig, AdapterSlot, add_adapters
from adaptertune.methods.parallel import ParallelSlot, add_parallel_adapters
from adaptertune.methods.slots import BlockSlot

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class _Scale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.randn(dim) * 0.1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 + self.s)


class _ScaleSlot(BlockSlot):
    attr, kind = "scales", "scale"

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return module(output)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_two_sets_activate_detach_remove(tiny_vit):
    torch.manual_seed(0)
    model = tiny_vit()
    keys, base = set(model.state_dict()), model(X)
    _ScaleSlot.attach(model, "a", {i: _Scale(192) for i in range(12)})
    _ScaleSlot.attach(model, "b", {i: _Scale(192) for i in (10, 11)})
    assert _ScaleSlot.set_names(model) == ["a", "b"] and _ScaleSlot.blocks_of(model, "b") == [10, 11]
    assert _hooks(model) == 12  # one hook per slot, not per set
    assert torch.equal(model(X), base)  # attached sets are inactive
    _ScaleSlot.activate(model, "a")
    out_a = model(X)
    _ScaleSlot.activate(model, "b")
    out_b = model(X)
    assert _ScaleSlot.active_set(model) == "b"
    assert not torch.equal(out_a, base) and not torch.equal(out_b, base) and not torch.equal(out_a, out_b)
    want_b = model.blocks[11].scales["b"].s
    assert {k for k in model.state_dict() if k not in keys} == {
        *(f"blocks.{i}.scales.a.s" for i in range(12)),
        "blocks.10.scales.b.s",
        "blocks.11.scales.b.s",
    }

    _ScaleSlot.detach(model, "a")  # blocks 0..9 held only "a": they lose their slot and hook
    assert _ScaleSlot.set_names(model) == ["b"] and _hooks(model) == 2
    assert all(not hasattr(b, "scales") for b in model.blocks[:10])
    assert torch.equal(model(X), out_b) and model.blocks[11].scales["b"].s is want_b
    _ScaleSlot.activate(model, None)
    assert torch.equal(model(X), base)

    _ScaleSlot.remove(model)
    assert _ScaleSlot.set_names(model) == [] and _hooks(model) == 0
    assert set(model.state_dict()) == keys and torch.equal(model(X), base)
    with pytest.raises(ConfigError, match=r"No set named 'a' in `block.scales`; this model has: none"):
        _ScaleSlot.activate(model, "a")


@pytest.mark.parametrize("add", [add_adapters, add_parallel_adapters])
def test_adapter_slots_remove_their_hooks_wherever_they_are(tiny_vit, add):
    """Serial slots hook the block, parallel slots its MLP; removing the last set removes either hook."""
    model = tiny_vit()
    keys, base = set(model.state_dict()), model(X)
    add(model, AdapterConfig(rank=4, init="random"), name="a")
    add(model, AdapterConfig(rank=2, placement="last:2", init="random"), name="b")
    assert _hooks(model) == 12
    AdapterSlot.remove(model)
    assert _hooks(model) == 0 and set(model.state_dict()) == keys and torch.equal(model(X), base)


def test_kinds_sharing_an_attribute_exclude_each_other_and_nothing_changes(tiny_vit):
    model = add_adapters(tiny_vit(), AdapterConfig(rank=4, placement="last:2"))
    before = (set(model.state_dict()), _hooks(model))
    match = r"backbone already holds serial adapter sets in `block.adapters`; parallel adapter sets cannot share"
    with pytest.raises(ConfigError, match=match):
        ParallelSlot.attach(model, "p", {0: nn.Identity()})  # other blocks than the serial ones: still refused
    assert (set(model.state_dict()), _hooks(model)) == before


@pytest.mark.parametrize("name", ["a", "train", "active", "x.y", ""])
def test_set_names_that_cannot_be_keys_are_refused(tiny_vit, name):
    model = tiny_vit()
    _ScaleSlot.attach(model, "a", {0: _Scale(192)})
    with pytest.raises(ConfigError, match="already exists|cannot name|without dots"):
        _ScaleSlot.attach(model, name, {1: _Scale(192)})
    assert _ScaleSlot.set_names(model) == ["a"]


def test_a_deep_copy_has_its_own_slots_and_hooks(tiny_vit):
    model = tiny_vit()
    _ScaleSlot.attach(model, "a", {3: _Scale(192)})
    _ScaleSlot.activate(model, "a")
    out = model(X)
    clone = copy.deepcopy(model)
    _ScaleSlot.remove(clone)
    assert _hooks(clone) == 0 and _hooks(model) == 1
    assert torch.equal(model(X), out) and not torch.equal(clone(X), out)


# ---------------------------------------------------------------- a method that declares a slot gets the rest
class _ScaleMethod(Method):
    """All of a per-block method's multi-task wiring: its slot and its modules (build, attach, activate, detach and
    the adapter-file key mapping are the Method defaults)."""

    name, description, slot, shares_backbone = "scales", "test: a scale after the last two blocks", _ScaleSlot, True

    def slot_modules(self, model, options):
        return {i: _Scale(model.embed_dim) for i in (10, 11)}


def test_a_method_with_a_slot_builds_and_shares_a_backbone(tiny_vit):
    method = _ScaleMethod()
    torch.manual_seed(0)
    single = method.build(tiny_vit(), None)
    assert [n for n, p in single.named_parameters() if p.requires_grad] == [
        "blocks.10.scales.default.s",
        "blocks.11.scales.default.s",
        "head.weight",
        "head.bias",
    ]
    tensors = {n: p.detach() for n, p in single.named_parameters() if p.requires_grad and ".scales." in n}
    shared = tiny_vit()
    base = shared(X)
    for task in ("a", "b"):
        method.attach(shared, task, None, tensors, "a.safetensors")
    assert not any(p.requires_grad for n, p in shared.named_parameters() if ".scales.a." in n)
    method.activate(shared, "a")
    assert torch.equal(shared(X), single(X))
    method.activate(shared, None)
    assert torch.equal(shared(X), base)
    method.detach(shared, "a")
    method.activate(shared, "b")
    assert torch.equal(shared(X), single(X))
    method.detach(shared, "b")
    assert _hooks(shared) == 0 and torch.equal(shared(X), base)


def test_slot_attach_refuses_tensors_that_do_not_fit(tiny_vit):
    method, model = _ScaleMethod(), tiny_vit()
    wrong = {"blocks.10.scales.default.s": torch.zeros(3), "blocks.11.scales.default.s": torch.zeros(192)}
    with pytest.raises(CheckpointError, match=r"'f.st': 'blocks.10.scales.c.s' is \(3,\) in the file, \(192,\)"):
        method.attach(model, "c", None, wrong, "f.st")
    with pytest.raises(CheckpointError, match=r"unexpected \[\], missing \['blocks.11.scales.c.s'\]"):
        method.attach(model, "c", None, {"blocks.10.scales.default.s": torch.zeros(192)}, "f.st")
    assert _ScaleSlot.set_names(model) == [] and _hooks(model) == 0  # nothing is left attached
    method.attach(model, "c", None, {k: torch.zeros(192) for k in wrong}, "f.st")
    with pytest.raises(ConfigError, match=r"Task 'c' \(g.st\): A set named 'c' already exists"):
        method.attach(model, "c", None, {}, "g.st")


# ---------------------------------------------------------------- several hooks per slot; a set takes its block's mode
class _PairSlot(BlockSlot):
    """Keeps the attention's input (pre-hook) and adds a scaled copy of it to the attention and the MLP outputs."""

    attr, kind = "pairs", "pair"

    def __init__(self, block: nn.Module) -> None:
        super().__init__(block)
        self.kept: torch.Tensor | None = None

    @classmethod
    def hook_targets(cls, block):
        return {"attn": block.attn, "mlp": block.mlp}

    @classmethod
    def pre_hook_targets(cls, block):
        return {"attn": block.attn}

    def enter(self, name, target, args):
        self.kept = args[0]

    def run_at(self, name, target, args, output):
        return output + self[self.active][name](self.kept if name == "attn" else args[0])


def _pair(dim: int) -> nn.ModuleDict:
    return nn.ModuleDict({"attn": nn.Sequential(nn.Dropout(0.5), _Scale(dim)), "mlp": _Scale(dim)})


def test_a_slot_with_several_hooks_runs_and_removes_them_together(tiny_vit):
    torch.manual_seed(0)
    model = tiny_vit().eval()
    keys, base = set(model.state_dict()), model(X)
    _PairSlot.attach(model, "a", {i: _pair(192) for i in (1, 2)})
    blk = model.blocks[2]
    assert blk.pairs["a"].training is False  # the block's eval mode: no dropout in a set attached to it
    assert (len(blk.attn._forward_hooks), len(blk.attn._forward_pre_hooks), len(blk.mlp._forward_hooks)) == (1, 1, 1)
    assert torch.equal(model(X), base)  # inactive: every hook passes through
    _PairSlot.activate(model, "a")
    out = model(X)
    assert not torch.equal(out, base) and torch.equal(model(X), out)  # eval mode: deterministic
    with torch.no_grad():
        x = torch.randn(2, 65, 192)
        s = blk.pairs["a"]
        h = blk.norm1(x)
        x1 = x + blk.ls1(blk.attn.forward(h) + s["attn"](h))  # .forward: without the hooks
        g = blk.norm2(x1)
        torch.testing.assert_close(blk(x), x1 + blk.ls2(blk.mlp.forward(g) + s["mlp"](g)))
    _PairSlot.remove(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert set(model.state_dict()) == keys and torch.equal(model(X), base)


def test_a_set_joins_in_its_blocks_mode(tiny_vit):
    model = tiny_vit().eval()
    add_adapters(model, AdapterConfig(rank=4, dropout=0.5, placement="last:1"))
    assert model.blocks[11].adapters["default"].training is False
    model.train()
    _ScaleSlot.attach(model, "a", {0: _Scale(192).eval()})
    assert model.blocks[0].scales["a"].training is True
