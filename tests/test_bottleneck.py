"""Pfeiffer and Houlsby adapters (methods/bottleneck.py): sequential bottlenecks on the attention / MLP outputs."""

import copy

import pytest
import timm
import torch

from adaptertune.config import RunConfig
from adaptertune.engine import load_tensors
from adaptertune.errors import CheckpointError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.bottleneck import BottleneckOptions, HoulsbySlot, PfeifferSlot
from adaptertune.multitask import MultiTaskModel
from adaptertune.runs import run
from helpers import TINY_VIT, TINY_VIT_TIMM, make_image_folder, trainable_names

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
VARIANTS = {
    "cls": {},
    "avg": {"global_pool": "avg", "class_token": False},
    "reg": {"reg_tokens": 4},
    "layerscale": {"init_values": 1e-5},
}


def tiny(variant: str = "cls", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(
        TINY_VIT_TIMM["name"], **TINY_VIT_TIMM["args"], **VARIANTS[variant], num_classes=10
    ).eval()


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)


@pytest.mark.parametrize("method,params", [("pfeiffer", 156_768), ("houlsby", 313_536)])
def test_trainable_parameters_on_vit_b16_match_methods_md(vit_b, method, params):
    assert BottleneckOptions() == BottleneckOptions(rank=8, scale=1.0, dropout=0.1)
    model = build_method(method, copy.deepcopy(vit_b))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params + 76_900


@pytest.mark.parametrize("variant", VARIANTS)
def test_pfeiffer_starts_exactly_at_the_backbone(variant):
    plain = tiny(variant)
    keys = set(plain.state_dict())
    model = build_method("pfeiffer", tiny(variant), {"scale": 5})
    with torch.no_grad():
        assert torch.equal(model(X), plain(X))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(X), plain(X))
    assert {k for k in model.state_dict() if ".pfeiffer.default.mlp." not in k} == keys
    assert list(model.blocks[0].pfeiffer["default"]) == ["mlp"]
    assert len(model.blocks[0].attn._forward_hooks) == 0  # no hook on the attention


@pytest.mark.parametrize("variant", VARIANTS)
def test_houlsby_does_not_start_at_the_backbone_but_its_wiring_adds_zero_at_zero(variant):
    """Houlsby's Xavier up-projection moves the logits at step 0; zeroing it (weight, bias) gives them back."""
    plain = tiny(variant)
    model = build_method("houlsby", tiny(variant))
    ad = [b.houlsby["default"][s] for b in model.blocks for s in ("attn", "mlp")]
    biases = torch.cat([t for m in ad for t in (m.down.bias, m.up.bias)])
    assert 0 < biases.abs().max() < 1e-5 and all(m.up.weight.abs().min() > 0 for m in ad)  # N(0, 1e-6), Xavier
    with torch.no_grad():
        assert not torch.allclose(model(X), plain(X))
        for m in ad:
            m.up.weight.zero_()
            m.up.bias.zero_()
        assert torch.equal(model(X), plain(X))


def test_houlsby_forward_written_out():
    model = build_method("houlsby", tiny("layerscale"), {"scale": 0.5})
    blk = model.blocks[2]
    att, mlp = blk.houlsby["default"]["attn"], blk.houlsby["default"]["mlp"]

    def ad(m, z):
        return z + 0.5 * m.up(torch.relu(m.down(z)))

    with torch.no_grad():
        x = torch.randn(2, 65, 192)
        x1 = x + blk.ls1(ad(att, blk.attn(blk.norm1(x))))  # inside the LayerScale
        want = x1 + blk.ls2(ad(mlp, blk.mlp(blk.norm2(x1))))
        torch.testing.assert_close(blk(x), want)


@pytest.mark.parametrize("method", ["pfeiffer", "houlsby"])
def test_only_adapters_and_head_train_and_the_backbone_stays(method):
    model = build_method(method, tiny("reg"), {"rank": 4}).train()
    names = trainable_names(model)
    per_block = 8 if method == "houlsby" else 4
    assert len(names) == 2 + 12 * per_block and all(f".{method}.default." in n for n in names if "head" not in n)
    frozen = {
        k: v.clone() for k, v in model.state_dict().items() if f".{method}." not in k and not k.startswith("head")
    }
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), torch.tensor([1, 2])).backward()
        opt.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert model.blocks[4].get_submodule(method)["default"]["mlp"].up.weight.abs().sum() > 0


def test_houlsby_and_pfeiffer_tasks_share_a_backbone(tiny_run, tmp_path):
    specs = {"h": ("houlsby", {"rank": 4}), "p": ("pfeiffer", {"rank": 2}), "h2": ("houlsby", {"rank": 2})}
    files, want = [], {}
    for name, (method, options) in specs.items():
        run_dir, model = tiny_run(tmp_path / name, method, options)
        files.append(run_dir / "adaptertune_weights.safetensors")
        with torch.no_grad():
            want[name] = model(X)
    mt = MultiTaskModel.from_files(files, names=list(specs))
    with torch.no_grad():
        for name in ["h", "p", "h2", "p", "h", "h2"]:
            mt.set_active(name)
            assert torch.equal(mt(X), want[name]), name
    mt.remove_task("h")
    assert HoulsbySlot.set_names(mt.backbone) == ["h2"] and PfeifferSlot.set_names(mt.backbone) == ["p"]
    tensors, _ = load_tensors(files[1])
    rest = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match="do not match the rebuilt set"):  # a Pfeiffer file read as Houlsby
        METHODS.get("houlsby").attach(mt.backbone, "wrong", BottleneckOptions(rank=2), rest, "f")
    assert HoulsbySlot.set_names(mt.backbone) == ["h2"]


class _StopAt(Exception):
    pass


class _Stop:
    def __init__(self, n: int) -> None:
        self.n, self.start_step = n, None

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        self.start_step = start_step

    def on_step(self, step, loss, lr):
        if step + 1 == self.n:
            raise _StopAt

    def on_epoch_end(self, metrics):
        pass


@pytest.mark.slow  # three tiny training runs (over 10 s on the shared machine, as every resume test here)
def test_resume_after_one_epoch_is_bitwise(tmp_path):
    """2 epochs in one go == 1 epoch, stopped, resumed for the second (the adapter dropout draws from the RNG)."""
    folder = make_image_folder(tmp_path / "data", n_classes=2, n_train=8, n_test=2, size=32)

    def cfg(out):  # 14 train images + 2 val, batch 7: 2 steps per epoch
        train = {"epochs": 2, "batch_size": 7, "seed": 3, "device": "cpu", "log_every_steps": 1}
        return RunConfig.from_dict(
            {
                "backbone": TINY_VIT,
                "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0},
                "method": "houlsby",
                "adapter": {"rank": 2},
                "train": train,
                "out_dir": str(out),
            }
        )

    run(cfg(tmp_path / "ref"))
    with pytest.raises(_StopAt):
        run(cfg(tmp_path / "run"), [_Stop(3)])  # the first step of epoch 2
    resumed = _Stop(-1)
    run(cfg(tmp_path / "run"), [resumed], resume=True)
    assert resumed.start_step == 2  # from the end-of-epoch-1 checkpoint
    a, _ = load_tensors(tmp_path / "ref" / "adaptertune_weights.safetensors")
    b, _ = load_tensors(tmp_path / "run" / "adaptertune_weights.safetensors")
    assert a.keys() == b.keys() and len(a) == 2 + 12 * 8
    assert all(torch.equal(a[k], b[k]) for k in a)
