"""Rank advice tested against a label-permutation null: how many gradient directions the task itself creates.

The energy rule of :mod:`.advise` reads a rank off the spectrum of the per-token gradients, but that
spectrum is mostly the backbone's: with the labels permuted it barely moves. Here the spectrum of the true
labels is compared with the spectra of ``permutations`` random relabellings of the same images, and only
what the true labels add counts:

1. Pooled features of ``n`` training images from the frozen backbone (forward only, cheap), and a
   multinomial logistic head fitted on them (accelerated gradient descent), cross-fitted over two halves (each half's
   gradient comes from the head fitted on the other half, so it is held-out error, not memorisation);
   the L2 strength is chosen on the true labels' held-out loss and reused for every permutation.
2. For each label set (true, and each permutation with its own heads), the held-out gradient of the
   cross-entropy at the pooled features, ``(softmax - onehot) W`` per image, is pushed back to each
   placed block's output tokens with one backward pass of a shared forward graph over ``grad_images``
   of the images: ``G_l`` (tokens, d).
3. Per block, the eigenvalues of ``G_l^T G_l`` as shares of their sum (so that the loss level, lower for
   a head that fits, does not decide), descending. A direction counts when the true labels' share at that
   index exceeds the ``quantile`` of the permutations' shares at the same index; the block's count is the
   length of the leading run of such directions.
4. The advice is the median count over blocks. A median of 0 means the true labels concentrate the
   gradient no more than random labels do: the tool says "head-only may suffice" instead of a rank.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..methods.adapter import adapter_param_count
from .advise import L2_GRID
from .block_grads import block_outputs, freeze, pooled_features

__all__ = ["HEAD_ONLY", "NullAdvice", "advise_rank_null", "crossfit_gradients", "fit_head", "leading_exceedance"]

_logger = logging.getLogger(__name__)
HEAD_ONLY = "head-only may suffice"


def fit_head(feats: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, steps: int = 300) -> tuple:
    """Multinomial logistic regressions ``softmax(feats W_p^T + b_p)``, one per row of ``y``, with L2 on ``W``.

    Accelerated gradient descent (Nesterov / FISTA, Beck & Teboulle 2009) with the step ``1 / L`` from the
    Lipschitz bound ``L = ||[X, 1]||_2^2 / (2 n) + 2 l2`` of the mean cross-entropy's gradient: a fixed
    number of small tensor operations, no line search, every labelling at once.

    Args:
        feats: (n, d) features.
        y: (P, n) labels, one labelling per row.
        num_classes: classes.
        l2: L2 strength on the weights.
        steps: iterations.

    Returns:
        ``(W, b)``: (P, classes, d) and (P, classes).
    """
    n, d = feats.shape
    x1 = torch.cat([feats, torch.ones(n, 1, dtype=feats.dtype)], 1)  # (n, d+1): the bias as a column
    lip = float(torch.linalg.matrix_norm(x1, 2)) ** 2 / (2 * n) + 2 * l2
    onehot = F.one_hot(y, num_classes).to(feats.dtype)  # (P, n, C)
    decay = torch.ones(d + 1, dtype=feats.dtype)
    decay[-1] = 0.0  # no L2 on the bias
    w = torch.zeros(y.shape[0], num_classes, d + 1, dtype=feats.dtype)
    v, t = w.clone(), 1.0
    for _ in range(steps):
        prob = torch.einsum("nd,pcd->pnc", x1, v).softmax(-1)
        grad = torch.einsum("pnc,nd->pcd", prob - onehot, x1) / n + 2 * l2 * decay * v
        w_next = v - grad / lip
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        v = w_next + (t - 1) / t_next * (w_next - w)
        w, t = w_next, t_next
    return w[..., :d].contiguous(), w[..., d].contiguous()


def crossfit_gradients(
    feats: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out gradients at the features from heads fitted on the other half, for every labelling.

    Args:
        feats: (n, d) features.
        y: (P, n) labellings.

    Returns:
        ``g`` (P, n, d): per labelling and image, ``d loss_i / d feats_i`` of its held-out cross-entropy;
        per labelling the held-out loss, the held-out accuracy and the training loss (means over the halves).
    """
    n = y.shape[1]
    # stratified halves of the first labelling (alternate within each class, in a seeded random order)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    order = order[torch.argsort(y[0][order], stable=True)]
    half = torch.empty(n, dtype=torch.long)
    half[order] = torch.arange(n) % 2
    g = torch.zeros(y.shape[0], n, feats.shape[1], dtype=feats.dtype)
    ho_loss, ho_acc, tr_loss = (torch.zeros(y.shape[0], dtype=torch.float64) for _ in range(3))
    for fold in (0, 1):
        train, test = half != fold, half == fold
        w, b = fit_head(feats[train], y[:, train], num_classes, l2)

        lt, yt = torch.einsum("nd,pcd->pnc", feats[test], w) + b[:, None], y[:, test]  # (P, n_test, C)
        ltr = torch.einsum("nd,pcd->pnc", feats[train], w) + b[:, None]
        prob = lt.softmax(-1)
        g[:, test] = torch.einsum("pnc,pcd->pnd", prob - F.one_hot(yt, num_classes).to(prob.dtype), w)
        ho_loss += F.cross_entropy(lt.transpose(1, 2), yt, reduction="none").mean(1) / 2
        ho_acc += (lt.argmax(-1) == yt).double().mean(1) / 2
        tr_loss += F.cross_entropy(ltr.transpose(1, 2), y[:, train], reduction="none").mean(1) / 2
    return g, ho_loss, ho_acc, tr_loss


def leading_exceedance(true_share: torch.Tensor, null_share: torch.Tensor, quantile: float) -> int:
    """Length of the leading run of indices where ``true_share`` exceeds the ``quantile`` of ``null_share``.

    Args:
        true_share: (K,) descending eigenvalue shares of the true labels.
        null_share: (P, K) the same for P permutations.
        quantile: e.g. 0.95.
    """
    q = torch.quantile(null_share, quantile, dim=0)
    above = (true_share > q).tolist()
    return above.index(False) if False in above else len(above)


@dataclass
class NullAdvice:
    """The permutation-tested rank advice."""

    advised_rank: int | None  # None: head-only may suffice
    verdict: str  # "rank" or HEAD_ONLY
    reason: str
    adapter_params: int | None  # adapters on the placed blocks at the advised rank
    block_counts: dict[int, int]  # per block: leading directions above the null's quantile
    permutations: int
    quantile: float
    blocks: list[int]
    width: int
    n_images: int  # head fits
    n_grad_images: int  # gradient pass
    head_l2: float
    head_train_loss: float
    head_heldout_loss: float
    head_heldout_acc: float
    null_heldout_loss: float  # mean over permutations
    true_spectrum: dict[int, list[float]]  # per block, leading whitened eigenvalues (up to 64)
    null_q: dict[int, list[float]]  # per block, the null's quantile at each index
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gram(grad: torch.Tensor) -> torch.Tensor:
    """``G^T G / trace`` of one block's token gradients (B, N, d): where the loss wants the tokens to move."""
    g = grad.reshape(-1, grad.shape[-1]).double()  # (B*N, d)
    gram = (g.T @ g).cpu()
    return gram / gram.trace().clamp_min(1e-300)


def _whitened_spectrum(gram: torch.Tensor, ref: torch.Tensor, k: int, ridge: float = 1e-2) -> torch.Tensor:
    """Leading ``k`` eigenvalues, descending, of ``gram`` whitened by ``ref``: ``R^-1/2 gram R^-1/2`` with
    ``R = ref + ridge * mean eigenvalue``. A value above 1: this direction gets more of the gradient than
    it does under the reference."""
    d = ref.shape[0]
    ev, vec = torch.linalg.eigh(ref + ridge * ref.trace() / d * torch.eye(d, dtype=ref.dtype))
    w = vec @ torch.diag(ev.clamp_min(1e-300).rsqrt()) @ vec.T  # (d, d)
    return torch.linalg.eigvalsh(w @ gram @ w).flip(0)[:k]


def task_directions(true: torch.Tensor, null: list[torch.Tensor], quantile: float, k: int = 64) -> tuple:
    """Count the directions where the true labels' gradient exceeds the permutation null.

    The true gram is whitened by the mean null gram; each null gram by the mean of the *other* nulls
    (leave-one-out, so it is not compared with itself). The count is the leading run of indices where the
    true whitened eigenvalue exceeds the ``quantile`` of the nulls' at the same index.

    Returns:
        The count, the true spectrum (k,) and the null quantile (k,).
    """
    total = torch.stack(null).sum(0)
    p = len(null)
    t = _whitened_spectrum(true, total / p, k)
    nulls = torch.stack([_whitened_spectrum(g, (total - g) / (p - 1), k) for g in null])  # (P, k)
    q = torch.quantile(nulls, quantile, dim=0)
    return leading_exceedance(t, nulls, quantile), t, q


def advise_rank_null(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    placement: str | list[int] = "all",
    permutations: int = 20,
    quantile: float = 0.95,
    grad_images: int = 128,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> NullAdvice:
    """Advise a rank from the gradient directions the true labels create beyond a label-permutation null.

    The model is not changed (no parameter gets a gradient; its own head is not used).

    Args:
        model: a timm ViT-family model (``blocks``, ``forward_features``, ``forward_head``).
        images: (n, C, H, W) training images, n >= 2 per fold (use hundreds: the head must generalise).
        labels: (n,) class indices.
        num_classes: number of classes.
        placement: the blocks that would get adapters.
        permutations: random relabellings in the null (at least 20).
        quantile: a direction counts above this quantile of the null.
        grad_images: images of the gradient pass (the first ones; the backward passes' cost).
        seed: seed of the permutations.
        batch_size: images per forward pass when computing features.
        device: where to compute.

    Returns:
        A :class:`NullAdvice`.

    Raises:
        ConfigError: fewer than 20 permutations or a quantile outside (0, 1).
        DataError: fewer than 8 images or a single class.
    """
    _check_null(permutations, quantile, labels)
    t0 = time.perf_counter()
    device = torch.device(device)
    model, blocks, d = freeze(model, placement, device)
    with torch.no_grad():
        feats = torch.cat([pooled_features(model, x.to(device)).double().cpu() for x in images.split(batch_size)])
    y = labels.long().cpu()
    heads = _crossfit_true_and_permuted(feats, y, num_classes, permutations, seed)  # (n, d) -> per labelling
    _logger.info(
        "head: held-out loss %.3f (acc %.3f), permuted %.3f",
        heads.heldout_loss,
        heads.heldout_acc,
        float(heads.null_loss.mean()),
    )
    m = min(grad_images, len(y))
    grams = _block_grams(model, images[:m].to(device), blocks, [heads.g_true, *heads.g_null])
    tests = {i: task_directions(grams[0][i], [gm[i] for gm in grams[1:]], quantile, min(64, d)) for i in blocks}
    counts = {i: t[0] for i, t in tests.items()}
    verdict, advised, reason = _verdict(counts, quantile, permutations)
    return NullAdvice(
        advised_rank=advised,
        verdict=verdict,
        reason=reason,
        adapter_params=None if advised is None else adapter_param_count(len(blocks), d, advised),
        block_counts=counts,
        permutations=permutations,
        quantile=quantile,
        blocks=blocks,
        width=d,
        n_images=len(y),
        n_grad_images=m,
        head_l2=heads.l2,
        head_train_loss=heads.train_loss,
        head_heldout_loss=heads.heldout_loss,
        head_heldout_acc=heads.heldout_acc,
        null_heldout_loss=float(heads.null_loss.mean()),
        true_spectrum={i: [float(v) for v in t[1]] for i, t in tests.items()},
        null_q={i: [float(v) for v in t[2]] for i, t in tests.items()},
        seconds=time.perf_counter() - t0,
    )


def _check_null(permutations: int, quantile: float, labels: torch.Tensor) -> None:
    if permutations < 20:
        raise ConfigError(f"The permutation null needs at least 20 permutations, got {permutations}.")
    if not 0 < quantile < 1:
        raise ConfigError(f"The null quantile must be in (0, 1), got {quantile:g}.")
    if len(labels) < 8 or len(torch.unique(labels)) < 2:
        raise DataError(f"Rank advice needs at least 8 images of 2 or more classes, got {len(labels)} images.")


@dataclass
class _Heads:
    """The cross-fitted heads' held-out gradients at the features, for the true labels and the permutations."""

    l2: float  # chosen on the true labels' held-out loss
    g_true: torch.Tensor  # (n, d)
    g_null: torch.Tensor  # (P, n, d)
    heldout_loss: float
    heldout_acc: float
    train_loss: float
    null_loss: torch.Tensor  # (P,) held-out loss per permutation


def _crossfit_true_and_permuted(
    feats: torch.Tensor, y: torch.Tensor, num_classes: int, permutations: int, seed: int
) -> _Heads:
    """Cross-fitted heads on the true labels for each L2 of :data:`L2_GRID`; the L2 with the lowest held-out loss
    is then fixed for ``permutations`` seeded relabellings."""
    fits = {l2: crossfit_gradients(feats, y[None], num_classes, l2) for l2 in L2_GRID}
    l2 = min(fits, key=lambda v: float(fits[v][1][0]))
    gen = torch.Generator().manual_seed(seed)
    perms = torch.stack([y[torch.randperm(len(y), generator=gen)] for _ in range(permutations)])
    g_null, null_loss, _, _ = crossfit_gradients(feats, perms, num_classes, l2)
    g, ho_loss, ho_acc, tr_loss = fits[l2]
    return _Heads(l2, g[0], g_null, float(ho_loss[0]), float(ho_acc[0]), float(tr_loss[0]), null_loss)


def _block_grams(
    model: nn.Module, images: torch.Tensor, blocks: list[int], feature_grads: list[torch.Tensor]
) -> list[dict[int, torch.Tensor]]:
    """Per labelling, per placed block: :func:`_gram` of the gradient its held-out feature gradient (m, d) pushes
    back to the block's output tokens, from one shared forward graph over ``images``."""
    grams: list[dict[int, torch.Tensor]] = []
    with block_outputs(model, blocks) as outs, torch.enable_grad():
        pooled = pooled_features(model, images)  # (m, d)
        for g in feature_grads:
            grads = torch.autograd.grad(
                pooled, [outs[i] for i in blocks], grad_outputs=g[: len(images)].to(pooled), retain_graph=True
            )
            grams.append({i: _gram(gr) for i, gr in zip(blocks, grads)})
    return grams


def _verdict(counts: dict[int, int], quantile: float, permutations: int) -> tuple[str, int | None, str]:
    """The median block count as the advice: (verdict, advised rank or None for head-only, the reason)."""
    rank = int(math.ceil(float(torch.tensor(list(counts.values()), dtype=torch.float64).median())))
    q_pct = f"{quantile:.0%}"
    if rank == 0:
        reason = (
            f"in the median block the true labels concentrate the gradient no more than the {q_pct} quantile of "
            f"{permutations} label permutations"
        )
        return HEAD_ONLY, None, reason
    reason = (
        f"the true labels put more gradient energy than {q_pct} of {permutations} label permutations into "
        f"the leading {rank} directions (median over {len(counts)} blocks)"
    )
    return "rank", rank, reason


def advise_null_from_config(
    backbone: Any,
    data: Any,
    placement: str | list[int] = "all",
    n_images: int = 1024,
    grad_images: int = 128,
    permutations: int = 20,
    quantile: float = 0.95,
    seed: int = 0,
    device: str = "auto",
) -> tuple[NullAdvice, float]:
    """Build the backbone and the training split, then :func:`advise_rank_null` on ``n_images`` of it.

    Args:
        backbone: a ``config.BackboneConfig``.
        data: a ``config.DataConfig`` (augmentation is switched off).

    Returns:
        The advice and the wall-clock seconds of everything (model, images, the passes).
    """
    from ..engine import resolve_device
    from .probe_data import first_training_batches

    t0 = time.perf_counter()
    dev = resolve_device(device)
    built, classes, batches = first_training_batches(backbone, data, 64, n_images, seed, dev)
    images = torch.cat([x for x, _ in batches])[:n_images]
    labels = torch.cat([y for _, y in batches])[:n_images]
    _logger.info("rank advice (null): %s on %s, %d images", backbone.name, data.name, len(labels))
    advice = advise_rank_null(
        built.model,
        images,
        labels,
        len(classes),
        placement,
        permutations,
        quantile,
        grad_images,
        seed,
        device=dev,
    )
    return advice, time.perf_counter() - t0
