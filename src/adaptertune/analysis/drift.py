"""Init stability: how far the final features drift from the pretrained backbone's in the first epoch.

The paper's argument for zero-initializing ``W_up``: the adapted network starts as the pretrained
function, so early training does not wreck the pretrained representation; a random up-projection
adds a random perturbation to every block at step 0. This module measures it, per init
(``zero``, ``small``, ``random``): on a fixed probe batch, the pooled final features (pre-logits) of the
adapted model are compared with those of the plain pretrained backbone every few steps, by

- linear CKA (Kornblith et al., 2019, "Similarity of Neural Network Representations Revisited"):
  ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = X X^T``, ``L = Y Y^T``; 1 = same up to rotation
  and isotropic scale. HSIC is the unbiased estimator (Song et al., 2012, "Feature Selection via Dependence
  Maximization", JMLR; used for CKA by Nguyen et al., 2021, "Do Wide and Deep Networks Learn the Same
  Things?"). The plug-in estimator (Kornblith's eq. 5, ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on
  centred features) is biased upwards when n is not much larger than the width: two independent random
  feature sets of width 384 score ~0.86 on 64 images and still ~0.43 on 512; the unbiased one scores ~0;
- relative change ``||Y - X||_F / ||X||_F`` (0 = identical);

together with the training loss of every step. Everything else (W_down, head init, batch order, lr)
is the same across inits: the seed fixes it.

What zero init does and does not remove: it removes the drift at step 0 only (the adapted model *is*
the pretrained function, CKA 1 and relative change 0 before any update). From the first update on, the
adapters move the features under any init; what differs between inits after step 0 is the training
dynamics, which this measures, not a guarantee.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write_stream
from ..config import BackboneConfig, DataConfig
from ..engine import build_optimizer
from ..errors import ConfigError, NonFiniteLossError
from ..extras import require
from ..methods.adapter import ADAPTER_INITS, AdapterConfig, add_adapters

__all__ = [
    "ZERO_INIT_NOTE",
    "DriftCurve",
    "DriftResult",
    "drift_from_config",
    "linear_cka",
    "measure_drift",
    "plot_drift",
    "relative_change",
]

_logger = logging.getLogger(__name__)

ZERO_INIT_NOTE = (
    "Zero init removes the drift at step 0 only: with W_up = 0 the adapted model is the pretrained function "
    "(CKA 1, relative change 0 before any update). It does not stop later drift: from the first update on, "
    "the adapters move the features under every init, and the curves after step 0 show how far."
)


def _hsic_unbiased(gk: torch.Tensor, gl: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of two (n, n) Gram matrices (Song et al., 2012), n >= 4."""
    n = gk.shape[0]
    gk, gl = gk.clone(), gl.clone()
    gk.fill_diagonal_(0.0)
    gl.fill_diagonal_(0.0)
    ones = torch.ones(n, dtype=gk.dtype, device=gk.device)
    trace = (gk * gl).sum()  # tr(K~ L~), both symmetric
    means = gk.sum() * gl.sum() / ((n - 1) * (n - 2))  # 1^T K~ 1 . 1^T L~ 1 / ((n-1)(n-2))
    cross = 2.0 / (n - 2) * (ones @ gk @ (gl @ ones))  # 2/(n-2) 1^T K~ L~ 1
    return (trace + means - cross) / (n * (n - 3))


def linear_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = True) -> float:
    """Linear CKA between two feature matrices (n, p) and (n, q) of the same n examples.

    Args:
        x: features (n, p).
        y: features (n, q).
        unbiased: the unbiased HSIC estimator (default; needs n >= 4, about 0 for independent features at any
            n); False: the plug-in estimator on centred features (biased towards 1 when n is small).

    Returns:
        CKA, 1 for features equal up to rotation, isotropic scale and shift; nan when one side has no
        (estimated) variance.

    Raises:
        ConfigError: different n, or too few examples (2 for the plug-in estimator, 4 for the unbiased one).
    """
    need = 4 if unbiased else 2
    if x.shape[0] != y.shape[0] or x.shape[0] < need:
        raise ConfigError(
            f"CKA needs the same n >= {need} examples in both, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    x = x.double() - x.double().mean(0, keepdim=True)  # (n, p); centring changes neither estimator's value
    y = y.double() - y.double().mean(0, keepdim=True)
    if unbiased:
        gk, gl = x @ x.T, y @ y.T  # (n, n) linear-kernel Gram matrices
        kk, ll = _hsic_unbiased(gk, gk), _hsic_unbiased(gl, gl)
        return float(_hsic_unbiased(gk, gl) / torch.sqrt(kk * ll)) if kk > 0 and ll > 0 else float("nan")
    num = torch.linalg.matrix_norm(y.T @ x) ** 2
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(num / den) if den > 0 else float("nan")


def relative_change(ref: torch.Tensor, x: torch.Tensor) -> float:
    """``||x - ref||_F / ||ref||_F``."""
    return float(torch.linalg.norm((x - ref).double()) / torch.linalg.norm(ref.double()))


@dataclass
class DriftCurve:
    init: str
    steps: list[int] = field(default_factory=list)  # step of each measurement (0 = before any update)
    cka: list[float] = field(default_factory=list)
    rel_change: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # training loss of step 1, 2, ...
    seconds: float = 0.0


@dataclass
class DriftResult:
    curves: list[DriftCurve]
    setup: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    f = model.forward_head(model.forward_features(x), pre_logits=True)  # (n, d)
    model.train(was)
    return f


def measure_drift(
    build: Callable[[], nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    probe: torch.Tensor,
    adapter: AdapterConfig,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    every: int = 5,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DriftCurve:
    """Train adapters (+ head) on ``batches`` and record the drift of the probe's features.

    Args:
        build: returns a fresh pretrained backbone with its task head (same weights on every call).
        batches: the training batches (one epoch, or fewer steps); the same for every init.
        probe: a fixed batch of images (n, 3, H, W) the features are measured on.
        adapter: rank, init, placement, ... of the adapters.
        lr: constant AdamW learning rate (no warm-up: the first steps are what is measured).
        weight_decay: AdamW weight decay.
        every: measure every this many steps (and at step 0 and the last step).
        grad_clip: max gradient norm (None: no clipping).
        seed: seeds the adapters' init (W_down is the same across inits for the same seed).
        device: where to train.

    Returns:
        A :class:`DriftCurve`.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    model = build().to(device)
    probe = probe.to(device)
    ref = _features(model, probe)
    torch.manual_seed(seed)
    add_adapters(model, adapter)
    model.train()
    opt = build_optimizer(model, lr, weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    curve = DriftCurve(adapter.init)

    def measure(step: int) -> None:
        f = _features(model, probe)
        curve.steps.append(step)
        curve.cka.append(linear_cka(ref, f))
        curve.rel_change.append(relative_change(ref, f))

    measure(0)
    step = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"Loss is {float(loss)} at step {step + 1} with init '{adapter.init}'.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        step += 1
        curve.losses.append(float(loss.detach()))
        if step % every == 0:
            measure(step)
    if curve.steps[-1] != step:
        measure(step)
    curve.seconds = time.perf_counter() - t0
    return curve


def drift_from_config(
    backbone: BackboneConfig,
    data: DataConfig,
    inits: Iterable[str] = ADAPTER_INITS,
    rank: int = 16,
    placement: str | list[int] = "all",
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    batch_size: int = 32,
    max_steps: int | None = None,
    every: int = 5,
    probe_size: int = 64,
    seed: int = 0,
    device: str = "auto",
) -> DriftResult:
    """Measure the drift of every init over the first epoch (or ``max_steps``) of a dataset.

    The probe batch is the first ``probe_size`` images of the test split (eval transform); training
    batches are a seeded shuffle of the training split, without augmentation, the same for every init.
    """
    from ..backbones import create_backbone
    from ..data import build_splits, load_raw
    from ..data.loaders import make_loader
    from ..engine import resolve_device

    inits = list(inits)
    bad = [i for i in inits if i not in ADAPTER_INITS]
    if bad or not inits:
        raise ConfigError(f"Unknown init {bad[0] if bad else '(none)'!r}; accepted: {', '.join(ADAPTER_INITS)}.")
    dev = resolve_device(device)
    data = DataConfig(**{**asdict(data), "augment": False})
    raw = load_raw(data)
    n_classes = len(raw.classes)
    first = create_backbone(backbone, num_classes=n_classes, seed=seed)
    splits = build_splits(data, first.data_config, raw)
    probe = torch.stack([splits.test[i][0] for i in range(min(probe_size, len(splits.test)))])
    loader = make_loader(splits.train, batch_size, data.num_workers, dev, shuffle=True, seed=seed)
    batches = []
    for x, y, *_ in loader:  # read once, reuse for every init (same order, same images)
        if y.numel():
            batches.append((x, y))
        if max_steps is not None and len(batches) >= max_steps:
            break

    def build() -> nn.Module:
        return copy.deepcopy(first.model)  # the pretrained weights and head init, without reloading them

    curves = []
    for init in inits:
        cfg = AdapterConfig(rank=rank, init=init, placement=placement)
        curves.append(measure_drift(build, batches, probe, cfg, lr, weight_decay, every, seed=seed, device=dev))
        _logger.info("drift %s: CKA %.4f -> %.4f", init, curves[-1].cka[0], curves[-1].cka[-1])
    setup = {
        "backbone": backbone.name,
        "backbone_args": backbone.args,
        "weights_tag": first.weights_tag,
        "dataset": data.name,
        "subset": data.subset,
        "rank": rank,
        "placement": placement,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "steps": len(batches),
        "every": every,
        "probe_size": len(probe),
        "seed": seed,
        "features": "pooled pre-logits on a fixed test batch vs the plain pretrained backbone",
        "cka": "linear CKA with the unbiased HSIC estimator (Song et al. 2012); independent features give ~0",
        "zero_init": ZERO_INIT_NOTE,
    }
    return DriftResult(curves, setup)


def plot_drift(result: DriftResult, path: str | Path) -> Path:
    """Three panels (CKA, relative change, training loss vs step), one line per init; writes a PNG."""
    require("matplotlib", "The drift figure").use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for c in result.curves:
        axes[0].plot(c.steps, c.cka, marker=".", label=c.init)
        axes[1].plot(c.steps, c.rel_change, marker=".", label=c.init)
        axes[2].plot(range(1, len(c.losses) + 1), c.losses, label=c.init)
    axes[0].set_ylabel("linear CKA vs pretrained")
    axes[1].set_ylabel("||f - f0|| / ||f0||")
    axes[2].set_ylabel("training loss")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(title="init")
    s = result.setup
    fig.suptitle(f"{s['backbone']} on {s['dataset']}: rank {s['rank']}, lr {s['lr']:g}, seed {s['seed']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write_stream(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path
