"""perf/: the speed tool, the memory probe and the matmul reference (the FLOP counts: test_flops.py)."""

from __future__ import annotations

import json

import pytest
import torch

from adaptertune.cli import main
from adaptertune.errors import ConfigError
from adaptertune.methods import build_method
from helpers import TINY_VIT_ARGS

REQUIRED = {
    "method",
    "step_ms",
    "step_ms_spread",
    "images_per_s",
    "peak_memory_mb",
    "trainable_params",
    "ratio_to_full",
    "flops_share",
    "inference_ratio",
}


def test_speed_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    args = ["speed", *TINY_VIT_ARGS, "--batch-size", "2", "--methods", "head,full,adapter,lora"]
    args += ["--steps", "1", "--warmup", "0", "--no-memory", "--matmul-size", "64", "--json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "adapter" in table and "x full" in table
    report = json.loads(out.read_text())
    assert set(report["machine"]) >= {"device", "threads", "matmul_gflops"}
    assert report["machine"]["matmul_gflops"] > 0
    rows = {m["method"]: m for m in report["methods"]}
    assert list(rows) == ["head", "full", "adapter", "lora"]
    for m in rows.values():
        assert REQUIRED <= set(m)
        assert m["step_ms"] > 0 and 0 < m["flops_share"]
        assert m["inference_ratio"] > 0
    assert rows["full"]["ratio_to_full"] == 1.0
    assert rows["adapter"]["trainable_params"] == 12 * (2 * 192 * 16 + 16 + 192) + 192 * 10 + 10
    assert rows["head"]["trainable_params"] == 192 * 10 + 10
    # lora is the registered method with train's options: rank 16 on qkv of 12 blocks (192 -> 576), + head
    assert rows["lora"]["trainable_params"] == 12 * 16 * (192 + 576) + 192 * 10 + 10
    assert rows["lora"]["gflops_per_step"] > rows["head"]["gflops_per_step"]


def test_speed_times_the_registered_lora_with_its_options(tiny_vit):
    from adaptertune.perf.step import build_for_speed

    cfg = main_speed_config(rank=4, placement="last:2", options={"lora": {"targets": "qkv+mlp"}})
    a = build_for_speed("lora", tiny_vit(), cfg.method_options("lora"))
    b = build_method("lora", tiny_vit(), {"rank": 4, "placement": "last:2", "targets": "qkv+mlp"})
    assert [n for n, p in a.named_parameters() if p.requires_grad] == [
        n for n, p in b.named_parameters() if p.requires_grad
    ]
    with pytest.raises(ConfigError, match="adapter.targets.*qkv, qkv\\+mlp; got 'fc1'"):
        main_speed_config(options={"lora": {"targets": "fc1"}})


def test_speed_passes_each_methods_own_options_and_the_shorthands():
    """--rank/--placement reach every method that takes them; a method's section wins; head takes none."""
    cfg = main_speed_config(methods=["head", "adapter", "lora"], rank=4, options={"lora": {"rank": 8}})
    assert cfg.method_options("head") is None
    assert (cfg.method_options("adapter").rank, cfg.method_options("lora").rank) == (4, 8)
    assert main_speed_config(methods=["lora"]).method_options("lora").rank == 16  # the method's own default
    with pytest.raises(ConfigError, match="Unknown option `lora.rnk`.*Did you mean `lora.rank`"):
        main_speed_config(methods=["head"], options={"lora": {"rnk": 8}})
    from adaptertune.cli.flags import config_dict
    from adaptertune.cli.main import build_parser

    args = build_parser(["speed"]).parse_args(["speed", "--set", "lora.targets=qkv+mlp", "--rank", "4"])
    assert config_dict(args)["lora"] == {"targets": "qkv+mlp"} and args.rank == 4


def main_speed_config(**kwargs):
    from adaptertune.perf import SpeedConfig

    return SpeedConfig(**kwargs)


def test_speed_rejects_unknown_method():
    assert main(["speed", "--methods", "head,nope", "--steps", "1"]) == 2


def test_memory_probe_child_process():
    from adaptertune.perf.memory import measure_peak_memory

    spec = {
        "backbone": "vit_tiny_patch16_224",
        "backbone_args": {"img_size": 32, "patch_size": 8, "depth": 2},
        "method": "full",
        "options": None,
        "batch_size": 2,
        "num_classes": 4,
        "device": "cpu",
        "precision": "fp32",
        "threads": 1,
        "steps": 1,
    }
    peak = measure_peak_memory(spec)
    # at least the weights, their gradients and two AdamW moments (4 x ~0.94 M params x 4 bytes)
    assert peak > 4 * 0.9e6 * 4 / 2**20


def test_matmul_reference_is_sized_for_the_device():
    from adaptertune.perf.speed import matmul_gflops, matmul_reference

    assert matmul_reference("cuda") == (8192, 20) and matmul_reference("cpu") == (1024, 1)
    calls = []
    real = torch.mm
    try:
        torch.mm = lambda *a, **k: calls.append(1) or real(*a, **k)
        matmul_gflops(8, "fp32", torch.device("cpu"), repeats=3)()
    finally:
        torch.mm = real
    assert len(calls) == 3
