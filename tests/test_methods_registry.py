"""The method registry (methods/registry.py). A method registered from this file alone (no edit in the package)
runs through train, eval, predict, multi-task and export: the registry entry is the whole unit. The built-in
methods are registered, and an option a method does not take is an error.

The toy is SSF-like scale-shift (Lian et al., 2022): after each placed block, ``h <- h * (1 + gamma) + beta``
with per-channel ``gamma = beta = 0`` at init (so it starts at the pretrained logits), plus the new head.
Its weights live in ``block.ssf``, a :class:`~adaptertune.methods.slots.BlockSlot` of named sets (as the
adapters' ``block.adapters``) run by a forward hook, so the backbone's own keys never change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adaptertune.cli import main
from adaptertune.config_checks import parse_placement
from adaptertune.errors import CheckpointError, ConfigError
from adaptertune.export import export_run
from adaptertune.methods import (
    METHODS,
    Method,
    build_method,
    register_method,
    resolve_adapter_config,
    unregister_method,
)
from adaptertune.methods.adapter import AdapterConfig
from adaptertune.methods.flops import step_flops, vit_geometry
from adaptertune.methods.slots import BlockSlot
from adaptertune.multitask import MultiTaskModel, predict_tasks
from adaptertune.runs import ADAPTER_FILE, evaluate_run, load_run, predict
from adaptertune.vit import backbone_blocks, backbone_width, head_parameter_names
from helpers import TINY_VIT_ARGS

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- the toy method (all of it)
@dataclass
class ScaleShiftOptions:
    """placement: blocks whose output is scaled and shifted; shift: also train beta (else scale only)."""

    placement: str | list[int] = "all"
    shift: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.shift, bool):
            raise ConfigError(f"`adapter.shift` must be true or false, got {self.shift!r}.")


class _ScaleShift(nn.Module):
    def __init__(self, dim: int, shift: bool) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim)) if shift else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, N, d)
        h = h * (1 + self.scale)
        return h + self.shift if self.shift is not None else h


class _ScaleShiftSlot(BlockSlot):
    attr, kind = "ssf", "scale-shift"

    def run(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return module(out)


class ScaleShift(Method):
    name = "scale-shift"
    description = "toy SSF: per-channel scale and shift after each placed block + head (test plugin)"
    options = ScaleShiftOptions
    shares_backbone = True

    def add(self, model: nn.Module, options: ScaleShiftOptions, task: str) -> nn.Module:
        placed = parse_placement(options.placement, len(backbone_blocks(model)))
        _ScaleShiftSlot.attach(model, task, {i: _ScaleShift(backbone_width(model), options.shift) for i in placed})
        _ScaleShiftSlot.activate(model, task)
        return model

    def build(self, model: nn.Module, options: ScaleShiftOptions) -> nn.Module:
        self.add(model, options, "default")
        head = set(head_parameter_names(model))
        for n, p in model.named_parameters():
            p.requires_grad_(n in head or ".ssf." in n)
        return model

    def attach(self, backbone, task, options, tensors, source) -> None:
        self.add(backbone, options, task)
        own = {k: p for k, p in backbone.named_parameters() if f".ssf.{task}." in k}
        renamed = {k.replace(".ssf.default.", f".ssf.{task}."): v for k, v in tensors.items()}
        if set(renamed) != set(own):
            self.detach(backbone, task)
            raise CheckpointError(f"'{source}': its scale-shift tensors do not match the placement.")
        with torch.no_grad():
            for k, v in renamed.items():
                own[k].copy_(v)

    def activate(self, backbone, task) -> None:
        _ScaleShiftSlot.activate(backbone, task)

    def detach(self, backbone, task) -> None:
        _ScaleShiftSlot.detach(backbone, task)


@pytest.fixture(scope="module")
def scale_shift():
    method = register_method(ScaleShift())
    yield method
    unregister_method(method.name)
    assert "scale-shift" not in METHODS


@pytest.fixture(scope="module")
def trained(scale_shift, image_folder, tmp_path_factory):
    """A scale-shift run trained by the CLI: its options are the usual adapter.* keys, the placement flag included."""
    out = tmp_path_factory.mktemp("plugin") / "ssf"
    args = ["train", *TINY_VIT_ARGS, "--dataset", "imagefolder", "--data-root", str(image_folder)]
    args += ["--subset", "8", "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--quiet"]
    args += ["--method", "scale-shift", "--placement", "last:4", "adapter.shift=false", "--out-dir", str(out)]
    assert main(args) == 0
    return out


# ---------------------------------------------------------------- through every tool
def test_toy_method_starts_at_pretrained_logits_and_checks_options(tiny_vit, scale_shift):
    base = tiny_vit()(X)
    model = build_method("scale-shift", tiny_vit(), {"placement": "last:2", "shift": False})
    assert torch.equal(model(X), base)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained == [
        "blocks.10.ssf.default.scale",
        "blocks.11.ssf.default.scale",
        *["head.weight", "head.bias"],
    ]
    with pytest.raises(  # 7: a rank no registered method has as its default (those pass a shared legacy base)
        ConfigError, match=r"`adapter.rank`=7 does not apply to method 'scale-shift'; it accepts placement, shift"
    ):
        build_method("scale-shift", tiny_vit(), {"rank": 7})
    with pytest.raises(ConfigError, match="No FLOP formula for method 'scale-shift'"):
        step_flops(vit_geometry(model), "scale-shift")
    assert main(["list", "methods"]) == 0


def test_toy_method_trains_evals_and_predicts(trained, image_folder):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["status"] == "success" and summary["method"] == "scale-shift" and summary["rank"] is None
    assert summary["placement"] == "last:4" and summary["trainable_params"] == 4 * 192 + 192 * 4 + 4
    # eval and predict rebuild it from the backbone and adaptertune_weights.safetensors
    assert evaluate_run(trained, device="cpu")["test_acc"] == pytest.approx(summary["test_acc"])
    img = str(next((image_folder / "test" / "class_0").iterdir()))
    assert len(predict(trained, [img], topk=2, device="cpu")[0]["top"]) == 2


def test_toy_method_shares_a_backbone_with_other_tasks(tiny_run, trained, image_folder, tmp_path):
    """Next to another scale-shift task and an adapter task, switching is exact (multi-task)."""
    other, other_model = tiny_run(tmp_path / "ssf_b", "scale-shift", {"placement": "every:3"})
    pets, pets_model = tiny_run(tmp_path / "pets", "adapter", {"rank": 4})
    files = [d / ADAPTER_FILE for d in (trained, other, pets)]
    mt = MultiTaskModel.from_files(files, names=["a", "b", "pets"])
    with torch.no_grad():
        want = {"a": load_run(trained, device="cpu").model(X), "b": other_model(X), "pets": pets_model(X)}
        for name in ["a", "pets", "b", "a", "b", "pets"]:
            mt.set_active(name)
            assert torch.equal(mt(X), want[name]), name
        mt.remove_task("a")
        mt.set_active("b")
        assert torch.equal(mt(X), want["b"])
    img = str(next((image_folder / "test" / "class_0").iterdir()))
    assert [r["task"] for r in predict_tasks(mt, [img], topk=1)] == ["b", "pets"]


def test_toy_method_exports(trained):
    """The forward hooks are traced into the file; the method has nothing to merge."""
    pytest.importorskip("onnxruntime")
    r = export_run(trained, "onnx")
    assert not r.merged and r.max_abs_diff <= 1e-4


# ---------------------------------------------------------------- the built-in methods and their options
def test_all_methods_registered():
    assert {"head", "full", "adapter", "lora", "parallel", "bitfit", "linear-probe-cached"} <= set(METHODS.names())


@pytest.mark.parametrize(
    ("method", "option"),
    [("lora", {"init": "small"}), ("lora", {"act": "relu"}), ("parallel", {"targets": "qkv+mlp"})],
)
def test_option_that_does_not_apply_is_an_error(method, option):
    match = f"adapter.{next(iter(option))}.*does not apply to method '{method}'; it accepts "
    with pytest.raises(ConfigError, match=match):
        resolve_adapter_config(method, option)  # as written in YAML
    if method == "lora":  # the adapter methods' options object, given to LoRA
        with pytest.raises(ConfigError, match=match):
            resolve_adapter_config(method, AdapterConfig(**option))


def test_methods_without_adapter_options_reject_them():
    for method in ("bitfit", "linear-probe-cached"):
        with pytest.raises(ConfigError, match="takes no adapter options"):
            resolve_adapter_config(method, AdapterConfig(rank=4))
