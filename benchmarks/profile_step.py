"""Where a training step's time goes, per method, profiled in alternation in one process.

    python benchmarks/profile_step.py --backbone test_vit --methods full,adapter,lora --rounds 3

Self CPU time of each aten op is summed into groups (matmul, attention, elementwise, norm, optimizer,
other) per method, as ms per step and as share of the method's step. Methods are profiled in turn
(A B C, A B C, ...) so machine load hits them alike.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from adaptertune.backbones import create_backbone
from adaptertune.config import BackboneConfig
from adaptertune.perf.step import build_for_speed, make_batch, make_train_step, speed_options

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward"),
    "attention": ("aten::_scaled_dot_product", "aten::_efficient_attention", "aten::_flash_attention"),
    "norm": ("aten::native_layer_norm",),
    "optimizer": ("aten::_foreach", "aten::addcdiv", "aten::lerp", "aten::sqrt", "aten::linalg_vector_norm"),
    "elementwise": ("aten::gelu", "aten::add", "aten::mul", "aten::copy_", "aten::fill_", "aten::cat", "aten::sum"),
}


def group_of(name: str) -> str:
    for g, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return g
    return "other"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="test_vit")
    p.add_argument("--backbone-arg", action="append", default=[])
    p.add_argument("--methods", default="full,adapter,lora")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kv = dict(a.split("=", 1) for a in args.backbone_arg)
    kv = {k: int(v) if v.isdigit() else v for k, v in kv.items()}
    base = create_backbone(BackboneConfig(name=args.backbone, pretrained=False, args=kv), 10).model
    dev = torch.device("cpu")
    steps = {}
    for m in args.methods.split(","):
        model = build_for_speed(m, copy.deepcopy(base), speed_options(m, rank=args.rank))
        x, y = make_batch(model.train(), args.batch_size, 10, dev)
        steps[m] = make_train_step(model, x, y, "fp32", dev)
        steps[m]()  # warm-up
    ms: dict[str, dict[str, float]] = {m: defaultdict(float) for m in steps}
    for _ in range(args.rounds):
        for m, step in steps.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            for e in prof.key_averages():
                ms[m][group_of(e.key)] += e.self_cpu_time_total / 1e3 / args.rounds
    cols = ["matmul", "attention", "elementwise", "norm", "optimizer", "other"]
    print(f"{args.backbone} batch {args.batch_size}, {args.threads} thread(s), ms per step (share of step)")
    print(f"{'method':10s}" + "".join(f"{c:>18s}" for c in cols) + f"{'total':>10s}")
    for m, g in ms.items():
        total = sum(g.values())
        print(f"{m:10s}" + "".join(f"{g[c]:9.1f} ({100 * g[c] / total:4.1f}%)" for c in cols) + f"{total:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
