"""Python steps of benchmarks/gpu_check.sh (one subcommand each); prints one line per figure, exits 1 on a failure.

usage: python benchmarks/gpu_check_steps.py data ROOT SIZE N_TRAIN N_TEST
       python benchmarks/gpu_check_steps.py methods
       python benchmarks/gpu_check_steps.py summary RUN_DIR PRECISION DEVICE_TYPE
       python benchmarks/gpu_check_steps.py ddp1 CONFIG_JSON        (DDP at world size 1, NCCL on CUDA)
       python benchmarks/gpu_check_steps.py syncs DEVICE PRECISION BACKBONE_JSON SIZE BATCH STEPS
       python benchmarks/gpu_check_steps.py datarate CONFIG_JSON SPEED_JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch


def fail(msg: str) -> None:
    print(f"FAIL {msg}")
    sys.exit(1)


def cmd_data(root: str, size: str, n_train: str, n_test: str) -> None:
    from adaptertune.sweeps.presets import make_demo_folder

    make_demo_folder(Path(root), n_classes=4, n_train=int(n_train), n_test=int(n_test), seed=0, size=int(size))
    print(f"data: {root} (4 classes x {n_train} train / {n_test} test images, {size} px PNG)")


def cmd_methods() -> None:
    from adaptertune.methods import METHODS

    print(" ".join(METHODS.names()))


def cmd_summary(run_dir: str, precision: str, device_type: str) -> None:
    s = json.loads((Path(run_dir) / "summary.json").read_text())
    if s["status"] != "success":
        fail(f"{run_dir}: status {s['status']}: {s.get('error')}")
    if s["precision"] != precision:
        fail(f"{run_dir}: precision {s['precision']}, expected {precision}")
    if device_type == "cuda" and not s.get("backend", {}).get("matmul_tf32"):
        fail(f"{run_dir}: CUDA settings not recorded: {s.get('backend')}")
    print(
        f"ok {s['method']:<20} test_acc {s['test_acc']:6.2f}  {s['train_images_per_second']:8.1f} img/s  "
        f"peak {s['peak_memory_mb']:.0f} MB  {s['device']} {s['precision']} {s.get('backend')}"
    )


def cmd_ddp1(config_json: str) -> None:
    """DDP over a process group of world size 1 (torchrun starts none for one process)."""
    from adaptertune.config import RunConfig
    from adaptertune.engine.distributed import shutdown
    from adaptertune.runs import run

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    cfg = RunConfig.from_dict(json.loads(config_json))
    cuda = cfg.train.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    try:
        summary = run(cfg)
    finally:
        shutdown()
    print(f"ok ddp world size 1 ({'nccl' if cuda else 'gloo'}): test_acc {summary.test_acc:.2f}")


def _count_syncs(device: torch.device, fn) -> int:
    """Device-to-host syncs during ``fn()``: torch.cuda's sync debug mode on CUDA; on CPU the tensor reads
    (item, tolist, bool/float/int) made by adaptertune code, as in tests/test_engine.py."""
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        for w in syncs[:5]:
            print(f"  sync: {w.filename}:{w.lineno}: {str(w.message)[:100]}")
        return len(syncs)
    count = [0]
    names = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
    real = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(f):
        def w(t, *a, **k):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("adaptertune"):
                count[0] += 1
            return f(t, *a, **k)

        return w

    try:
        for n in names:
            setattr(torch.Tensor, n, wrap(real[n]))
        fn()
    finally:
        for n in names:
            setattr(torch.Tensor, n, real[n])
    return count[0]


def cmd_syncs(device: str, precision: str, backbone_json: str, size: str, batch: str, steps: str) -> None:
    """Host syncs per training step of ``fit`` (adapter method, log every ``steps`` steps: 1 read per epoch)."""
    from adaptertune.backbones import create_backbone
    from adaptertune.config import BackboneConfig, TrainConfig
    from adaptertune.engine import Selection, fit
    from adaptertune.methods import build_method
    from adaptertune.resolve import resolve_train_config

    dev, n, bs = torch.device(device), int(steps), int(batch)
    model = build_method("adapter", create_backbone(BackboneConfig(**json.loads(backbone_json)), 4).model, None)
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(bs, 3, int(size), int(size), generator=g), torch.randint(0, 4, (bs,)), 0) for _ in range(n)
    ]
    if dev.type == "cuda":
        batches = [(x.pin_memory(), y.pin_memory(), k) for x, y, k in batches]
    cfg = TrainConfig(
        epochs=1, batch_size=bs, lr=1e-3, weight_decay=0.0, precision=precision, device=device, log_every_steps=n
    )
    cfg, last = resolve_train_config(cfg, dev), Selection.LAST_EPOCH
    fit(model, batches[:2], None, batches[:1], cfg, dev, selection=last)  # warm-up (cudnn.benchmark, allocator)
    syncs = _count_syncs(dev, lambda: fit(model, batches, None, batches[:1], cfg, dev, selection=last))
    # one read of the step log at the epoch end, one of the test sums, plus checkpoint-free epoch bookkeeping
    print(f"host syncs: {syncs} in {n} steps + 1 evaluation = {syncs / n:.2f} per step")
    if syncs > max(4, n // 2):
        fail(f"{syncs} host syncs in {n} steps")


def cmd_datarate(config_json: str, speed_json: str) -> None:
    """Images/s of the training loader alone (decode + augment, default workers) vs the model's step rate."""
    from adaptertune.backbones import create_backbone
    from adaptertune.config import RunConfig
    from adaptertune.data import build_splits, load_raw
    from adaptertune.data.loaders import make_loader

    cfg = RunConfig.from_dict(json.loads(config_json))
    raw = load_raw(cfg.data)
    built = create_backbone(cfg.backbone, num_classes=len(raw.classes), seed=0)
    splits = build_splits(cfg.data, built.data_config, raw)
    device = torch.device(cfg.train.device)
    loader = make_loader(splits.train, cfg.train.batch_size, cfg.data.num_workers, device, shuffle=True, seed=0)
    loader.sampler.set_epoch(1)
    n, t0 = 0, time.perf_counter()
    for epoch in (1, 2):
        loader.sampler.set_epoch(epoch)
        for x, _, _ in loader:
            x = x.to(device, non_blocking=True)
            n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    data_rate = n / (time.perf_counter() - t0)
    rows = {m["method"]: m for m in json.loads(Path(speed_json).read_text())["methods"]}
    model_rate = rows["adapter"]["images_per_s"]
    print(
        f"data path: {data_rate:.0f} img/s ({cfg.data.num_workers} workers, augment {cfg.data.augment}); "
        f"adapter step: {model_rate:.0f} img/s; data/model = {data_rate / model_rate:.2f}"
        + ("  <- the loader would starve the model" if data_rate < model_rate else "")
    )


if __name__ == "__main__":
    commands = {k[4:]: v for k, v in globals().items() if k.startswith("cmd_")}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        fail(f"usage: {__doc__}")
    commands[sys.argv[1]](*sys.argv[2:])
