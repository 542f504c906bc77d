"""Checks every PETL method's tests run (issue 24): ViT variants, a few training steps, the merge into plain timm,
the frozen backbone, an exact resume. Plain functions; the test files call them with their method's name."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from adaptertune.methods import METHODS
from adaptertune.multitask import MultiTaskModel
from adaptertune.runs import ADAPTER_FILE
from helpers import TINY_VIT, TINY_VIT_TIMM, make_image_folder

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

# the ViT shapes a method must handle: CLS token, pooled without CLS, register tokens, LayerScale
VARIANTS = {
    "cls": {},
    "avg": {"global_pool": "avg", "class_token": False},
    "reg": {"reg_tokens": 4},
    "layerscale": {"init_values": 1e-5},
}
VIT_B = {"name": "vit_base_patch16_224", "num_classes": 100}
HEAD_100 = 76_900  # a 100-class head on ViT-B/16


def variant_vit(variant: str = "cls", seed: int = 0, num_classes: int = 10) -> nn.Module:
    """The tiny ViT (helpers.TINY_VIT_TIMM) with the ``VARIANTS[variant]`` arguments, random init, eval mode."""
    torch.manual_seed(seed)
    args = {**TINY_VIT_TIMM["args"], **VARIANTS[variant]}
    return timm.create_model(TINY_VIT_TIMM["name"], **args, num_classes=num_classes).eval()


def vit_b() -> nn.Module:
    return timm.create_model(VIT_B["name"], pretrained=False, num_classes=VIT_B["num_classes"])


def n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_steps(model: nn.Module, steps: int = 3, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    """``steps`` AdamW steps on random images and labels (every trained tensor moves off its init); eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=g)
        y = torch.randint(0, model.num_classes, (4,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def frozen_unchanged_after_training(model: nn.Module) -> list[str]:
    """Train a few steps; the names of the untrained tensors that changed (expected: none)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    train_steps(model)
    return [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]


def counted_step_flops(model: nn.Module, batch: int = 2) -> int:
    """Matmul FLOPs torch's FlopCounterMode counts in one forward + backward of ``model`` (train mode, math
    attention: the counter would see the fused kernel as one op) on ``batch`` random images: what
    ``step_flops(...).scaled(batch).total`` must equal (tests/test_flops.py compares every method's defaults)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    for b in model.blocks:
        b.attn.fused_attn = False
    x, y = torch.randn(batch, 3, 32, 32), torch.arange(batch) % model.num_classes
    with FlopCounterMode(display=False) as fc:
        nn.functional.cross_entropy(model(x), y).backward()
    return fc.get_total_flops()


def merge_to_plain_timm(method: str, model: nn.Module, variant: str, folds: bool = True) -> float:
    """Merge ``model`` (trained, eval) with ``method``, load its state into a fresh plain timm model of the same
    arguments (strict), and return the max |logit diff| of the plain model vs the unmerged one. ``folds``: the
    method has something to fold (its merge says True), else it trains the backbone's own tensors only."""
    with torch.no_grad():
        ref = model(X)
    assert METHODS.get(method).merge(model) is folds
    assert "timm" in METHODS.get(method).export_formats()
    plain = variant_vit(variant, seed=1, num_classes=model.num_classes)
    plain.load_state_dict(model.state_dict())  # strict: the merged model is the plain architecture
    with torch.no_grad():
        return float((plain(X) - ref).abs().max())


class _Stopped(Exception):
    pass


class _StopAt:
    """A run callback that stops the run (an exception) after step ``n`` and keeps the step the run started at."""

    def __init__(self, n: int) -> None:
        self.n, self.start_step = n, None

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        self.start_step = start_step

    def on_step(self, step, loss, lr):
        if step + 1 == self.n:
            raise _Stopped

    def on_epoch_end(self, metrics):
        pass


def tasks_share_a_backbone(
    tiny_run, tmp: Path, specs: dict[str, tuple[str, dict | None]], order: list[str]
) -> tuple[MultiTaskModel, list[Path], dict[str, torch.Tensor]]:
    """Write a run per task ``name: (method, options)`` with the ``tiny_run`` fixture, load their adapter files as
    one MultiTaskModel and check, switching in ``order``, that each task's logits equal its own model's bitwise.
    Returns (the multi-task model, the adapter files, each task's logits)."""
    files, want = [], {}
    for name, (method, options) in specs.items():
        run_dir, model = tiny_run(tmp / name, method, options)
        files.append(run_dir / ADAPTER_FILE)
        with torch.no_grad():
            want[name] = model(X)
    mt = MultiTaskModel.from_files(files, names=list(specs))
    with torch.no_grad():
        for name in order:
            mt.set_active(name)
            assert torch.equal(mt(X), want[name]), name
    return mt, files, want


def resume_runs(
    tmp: Path,
    method: str,
    adapter: dict | None,
    n_classes: int = 4,
    size: int = 36,
    stop_at: int = 5,
    train: dict | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int | None]:
    """Train 2 epochs in one go (``tmp/ref``) and, apart (``tmp/cut``), stop after step ``stop_at`` and resume;
    ``train``: the train section's batch size, lr ... (default batch 8, lr 1e-2), over 2 epochs, seed 3, CPU.
    Returns (the uninterrupted run's trained tensors, the resumed run's, the step the resumed run started at)."""
    from adaptertune.config import RunConfig
    from adaptertune.engine import load_tensors
    from adaptertune.runs import run

    folder = make_image_folder(tmp / "data", n_classes=n_classes, n_train=8, n_test=2, size=size)
    train = {"epochs": 2, "seed": 3, "device": "cpu", **(train or {"batch_size": 8, "lr": 1e-2})}

    def config(out: Path) -> RunConfig:
        d = {
            "backbone": TINY_VIT,
            "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0},
            "method": method,
            "adapter": adapter,
            "train": train,
            "out_dir": str(out),
        }
        return RunConfig.from_dict(d)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    resumed = _StopAt(-1)
    try:
        run(config(tmp / "ref"))
        try:
            run(config(tmp / "cut"), [_StopAt(stop_at)])
        except _Stopped:
            pass
        else:
            raise AssertionError(f"the run was not stopped after step {stop_at}")
        run(config(tmp / "cut"), [resumed], resume=True)
    finally:
        torch.set_num_threads(threads)
    a, _ = load_tensors(tmp / "ref" / ADAPTER_FILE)
    b, _ = load_tensors(tmp / "cut" / ADAPTER_FILE)
    return a, b, resumed.start_step


def resumed_equals_uninterrupted(tmp: Path, method: str, adapter: dict | None) -> list[str]:
    """Train 2 epochs in one go and, apart, 1 epoch + 1 step, stopped, resumed; the trained tensors that differ."""
    a, b, _ = resume_runs(tmp, method, adapter)  # 28 train images: 4 steps/epoch, the epoch-1 checkpoint at step 4
    assert a.keys() == b.keys() and len(a) > 2
    return [k for k in a if not torch.equal(a[k], b[k])]
