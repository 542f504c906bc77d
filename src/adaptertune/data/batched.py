"""The per-image transforms of :mod:`.transforms`, applied to a batch of uint8 images on the training device.

:func:`batch_pipeline` translates a torchvision ``Compose`` (RandomResizedCrop, RandomHorizontalFlip,
Resize, CenterCrop, ToTensor, Normalize) into a :class:`BatchPipeline`. The random parameters of image
``i`` are drawn by torchvision's own algorithm (``RandomResizedCrop.get_params``, then the flip's
``torch.rand(1) < p``) from a generator seeded like the per-image path's global RNG, so a crop box and a
flip are exactly the ones the PIL path draws for the same ``(seed, epoch, i)``.

Resizing matches PIL's antialiased resampling (:func:`resize_levels`): on the CPU every pixel is within two
uint8 levels (2/255 before normalisation) of PIL's, ~1e-5 of them two levels off (non-square RGB only),
~0.5% one level off, the rest equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T

__all__ = ["BatchPipeline", "batch_pipeline", "draw_params", "resize_levels"]

_MODES = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}


def resize_levels(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(B, C, H, W) uint8 levels -> (B, C, *size) levels, antialiased and rounded as PIL does.

    On the CPU a uint8 tensor goes through torch's uint8 kernel (written to match PIL); elsewhere in float,
    separably, rounding between the passes as PIL does (within two levels, at ~1e-5 of the pixels).
    """
    if x.dtype == torch.uint8 and x.device.type == "cpu":
        return F.interpolate(x, size=size, mode=mode, antialias=True)
    x = x.float()
    if x.shape[-1] != size[1]:  # PIL resamples horizontally first, rounding to uint8 in between
        x = F.interpolate(x, size=(x.shape[-2], size[1]), mode=mode, antialias=True).round_().clamp_(0, 255)
    if x.shape[-2] != size[0]:
        x = F.interpolate(x, size=size, mode=mode, antialias=True).round_().clamp_(0, 255)
    return x


def _resized_shape(h: int, w: int, size: int | Sequence[int]) -> tuple[int, int]:
    """torchvision ``Resize``'s output (h, w): an int resizes the shorter side keeping the aspect ratio."""
    if not isinstance(size, int):
        return (int(size[0]), int(size[-1]))
    if w <= h:
        return int(size * h / w), size
    return size, int(size * w / h)


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision ``center_crop``: zero-pad when the image is smaller, then take the centred window."""
    h, w = x.shape[-2:]
    th, tw = size
    if th > h or tw > w:
        pl, pt = (tw - w) // 2 if tw > w else 0, (th - h) // 2 if th > h else 0
        x = F.pad(x, [pl, (tw - w + 1) // 2 if tw > w else 0, pt, (th - h + 1) // 2 if th > h else 0])
        h, w = x.shape[-2:]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[..., top : top + th, left : left + tw]


def _crop_box(g: torch.Generator, height: int, width: int, scale: Sequence[float], ratio: Sequence[float]):
    # torchvision RandomResizedCrop.get_params, drawing from ``g`` instead of the global RNG
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=g).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=g).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class _Op:
    kind: str  # rrc | flip | resize | center | normalize
    size: int | tuple[int, ...] = 0
    mode: str = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)
    p: float = 0.5
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


def _translate(t: object) -> _Op | None:
    if isinstance(t, T.RandomResizedCrop) and t.interpolation in _MODES and t.antialias is not False:
        return _Op("rrc", tuple(t.size), _MODES[t.interpolation], tuple(t.scale), tuple(t.ratio))
    if isinstance(t, T.RandomHorizontalFlip):
        return _Op("flip", p=float(t.p))
    if isinstance(t, T.Resize) and t.interpolation in _MODES and t.max_size is None and t.antialias is not False:
        size = t.size if isinstance(t.size, int) else tuple(t.size)
        return _Op("resize", size[0] if isinstance(size, tuple) and len(size) == 1 else size, _MODES[t.interpolation])
    if isinstance(t, T.CenterCrop):
        return _Op("center", tuple(t.size))
    if isinstance(t, T.ToTensor) or type(t).__name__ == "MaybeToTensor":  # timm's ToTensor for PIL input
        return _Op("to_tensor")
    if isinstance(t, T.Normalize) and not t.inplace:
        return _Op("normalize", mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std))
    return None


class BatchPipeline:
    """A translated ``Compose``: geometric ops on uint8 levels, then ToTensor + Normalize on the batch.

    ``random``: whether any op draws per-image parameters (then :meth:`__call__` needs ``params``).
    """

    def __init__(self, ops: list[_Op]) -> None:
        self.geometric = [op for op in ops if op.kind in ("rrc", "flip", "resize", "center")]
        norm = [op for op in ops if op.kind == "normalize"]
        self.mean, self.std = (norm[0].mean, norm[0].std) if norm else ((0.0,), (1.0,))
        self.random = any(op.kind in ("rrc", "flip") for op in ops)

    def draw(self, g: torch.Generator, height: int, width: int) -> list:
        """One image's parameters, in the order the per-image transforms draw them (one entry per random op)."""
        params = []
        for op in self.geometric:
            if op.kind == "rrc":
                params.append(_crop_box(g, height, width, op.scale, op.ratio))
            elif op.kind == "flip":
                params.append(bool(torch.rand(1, generator=g) < op.p))
        return params

    def levels(self, x: torch.Tensor, params: list[list] | None = None) -> torch.Tensor:
        """(B, C, H, W) uint8 -> (B, C, h, w) float uint8 levels after the geometric ops."""
        r = 0
        for op in self.geometric:
            if op.kind == "rrc":
                size = (op.size[0], op.size[-1])
                crops = [x[b : b + 1, :, i : i + h, j : j + w] for b, (i, j, h, w) in enumerate(p[r] for p in params)]
                x = torch.cat([resize_levels(c, size, op.mode) for c in crops])
                r += 1
            elif op.kind == "flip":
                flip = torch.tensor([p[r] for p in params], device=x.device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                r += 1
            elif op.kind == "resize":
                x = resize_levels(x, _resized_shape(x.shape[-2], x.shape[-1], op.size), op.mode)
            else:
                x = _center_crop(x, (op.size[0], op.size[-1]))
        return x.float()

    def normalize(self, levels: torch.Tensor) -> torch.Tensor:
        """Float levels (B, C, h, w), C 1 (grey, repeated as PIL's convert("RGB")) or 3 -> normalised (B, 3, h, w)."""
        x = levels.expand(-1, 3, -1, -1) / 255
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, x: torch.Tensor, params: list[list] | None = None) -> torch.Tensor:
        return self.normalize(self.levels(x, params))


def batch_pipeline(transform: object) -> BatchPipeline | None:
    """The batched equivalent of ``transform`` (a torchvision ``Compose`` of the ops above), or None when it
    holds anything else (it then runs per image)."""
    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    ops = [_translate(t) for t in steps]
    if any(op is None for op in ops) or [op.kind for op in ops if op.kind in ("to_tensor", "normalize")] not in (
        ["to_tensor", "normalize"],
        ["to_tensor"],
    ):
        return None
    kinds = [op.kind for op in ops]
    if kinds.index("to_tensor") < max(
        (i for i, k in enumerate(kinds) if k in ("rrc", "flip", "resize", "center")), default=-1
    ):
        return None  # geometric ops after ToTensor
    return BatchPipeline(ops)


def draw_params(pipeline: BatchPipeline, seeds: Sequence[int], height: int, width: int) -> list[list]:
    """Per-image parameters for the seeds ``seeds`` (one generator per image)."""
    return [pipeline.draw(torch.Generator().manual_seed(s), height, width) for s in seeds]


def view_arrays(view: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images (n, C, H, W) uint8, labels (n,)) of a :class:`~.base.SplitView` over array sources, C 1 or 3
    (RGBA drops alpha, as PIL's ``convert("RGB")``); None for any other view."""
    from .base import ArraySource, ConcatSource, SplitView

    if not isinstance(view, SplitView):
        return None
    parts = view.source.sources if isinstance(view.source, ConcatSource) else [view.source]  # CV pools splits
    if not all(isinstance(s, ArraySource) for s in parts) or len({s.images.shape[1:] for s in parts}) != 1:
        return None
    if any(getattr(s, "bad", None) for s in parts):  # a cache holding undecodable files: skipped per image
        return None
    pooled = parts[0].images if len(parts) == 1 else np.concatenate([s.images for s in parts])
    images = pooled[view.indices]
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3, 4):
        images = images.transpose(0, 3, 1, 2)[:, :3]
    else:
        return None
    if images.dtype.name != "uint8":
        return None
    labels = torch.tensor([view.source.targets[int(i)] for i in view.indices], dtype=torch.long)
    return torch.from_numpy(images.copy()), labels
