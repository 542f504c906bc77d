"""Record `adaptertune speed` figures and compare them with the last recorded run.

    python benchmarks/speed.py                      # every preset
    python benchmarks/speed.py test_vit --steps 4   # one preset, fewer rounds
    python benchmarks/speed.py --compare-only       # only compare the two latest recordings per preset

Each run writes benchmarks/results/<preset>-<UTC time>.json (the `adaptertune speed --json` object) and
prints the table, the issue-8 targets it meets, and the change against the previous recording of the same
preset. Ratios (x full, x lora, share of the matmul limit) come from one interleaved run and are the
figures to compare; absolute times depend on the machine and on its load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STD = ["--batch-size", "32", "--rank", "16", "--threads", "1", "--clock", "cpu"]
PRESETS: dict[str, list[str]] = {
    # vit_tiny at 32 px / patch 4 (65 tokens), the reference point
    "test_vit": ["--backbone", "test_vit", "--methods", "head,full,adapter,lora", *STD],
    # DINOv2-S/14 at 112 px (65 tokens); random init: the cost does not depend on the weights
    "dinov2_s14_112": [
        "--backbone",
        "vit_small_patch14_dinov2",
        "--backbone-arg",
        "img_size=112",
        "--methods",
        "head,full,adapter,lora",
        *STD,
    ],
    # inference overhead at the largest rank the target covers
    "test_vit_r64_inference": ["--backbone", "test_vit", "--methods", "adapter", *STD, "--rank", "64", "--no-memory"],
    # peak memory on ViT-S at 224 px (197 tokens)
    "vit_s_224_memory": ["--backbone", "vit_small_patch16_224", "--methods", "full,adapter", *STD, "--no-inference"],
}
DEFAULT_ROUNDS = {"test_vit": (8, 2), "dinov2_s14_112": (6, 2), "test_vit_r64_inference": (8, 2)}


def _imgfocus_registered() -> bool:
    try:
        from adaptertune.backbones import BACKBONES

        return "vit_small_patch14_dinov2.imgfocus" in BACKBONES
    except ImportError:
        return False


def targets(preset: str, report: dict) -> list[str]:
    rows = {m["method"]: m for m in report["methods"]}
    a, out = rows.get("adapter"), []

    def check(name: str, value: float | None, op: str, limit: float) -> None:
        if value is None:
            return
        ok = value <= limit if op == "<=" else value >= limit
        out.append(f"  {'MET ' if ok else 'MISS'} {name}: {value:.3f} (target {op} {limit})")

    if a is None:
        return out
    if preset == "vit_s_224_memory":
        check("adapter peak memory x full (ViT-S 224)", a["memory_ratio_to_full"], "<=", 0.80)
        return out
    if preset in ("test_vit", "dinov2_s14_112"):
        if a.get("flops_ratio_to_full") is not None:
            out.append(f"  note: adapter FLOPs x full = {a['flops_ratio_to_full']:.3f} (the ratio at equal FLOP/s)")
        check("adapter step x full", a["ratio_to_full"], "<=", 0.58)
        check("adapter step x PEFT LoRA", a["ratio_to_lora"], "<=", 0.80)
        check("adapter achieved FLOP/s share of matmul", a["flops_share"], ">=", 0.70)
    check(f"adapter r={report['config']['rank']} inference x plain", a["inference_ratio"], "<=", 1.05)
    return out


def compare(preset: str) -> list[str]:
    files = sorted(RESULTS.glob(f"{preset}-*.json"))
    if len(files) < 2:
        return [f"  (no earlier recording of {preset} to compare with)"]
    old, new = (json.loads(f.read_text()) for f in files[-2:])
    lines = [f"  vs {files[-2].name}:"]
    before = {m["method"]: m for m in old["methods"]}
    for m in new["methods"]:
        b = before.get(m["method"])
        if b is None:
            continue
        parts = []
        for key in ("ratio_to_full", "ratio_to_lora", "flops_share", "inference_ratio", "memory_ratio_to_full"):
            if m.get(key) is not None and b.get(key) is not None:
                parts.append(f"{key} {b[key]:.3f} -> {m[key]:.3f}")
        lines.append(f"    {m['method']}: " + ("; ".join(parts) or "no comparable ratios"))
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("presets", nargs="*", default=list(PRESETS), help=f"any of {', '.join(PRESETS)}")
    p.add_argument("--steps", type=int, default=None, help="timed rounds (default per preset)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--compare-only", action="store_true")
    args = p.parse_args()
    unknown = [x for x in args.presets if x not in PRESETS]
    if unknown:
        print(f"unknown preset {unknown[0]}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    for preset in args.presets:
        if not args.compare_only:
            cmd = list(PRESETS[preset])
            if preset == "dinov2_s14_112" and _imgfocus_registered():
                cmd[1] = "vit_small_patch14_dinov2.imgfocus"
                del cmd[2:4]
            steps, warmup = DEFAULT_ROUNDS.get(preset, (1, 0))
            cmd += [
                "--steps",
                str(args.steps or steps),
                "--warmup",
                str(args.warmup if args.warmup is not None else warmup),
            ]
            out = RESULTS / f"{preset}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
            cmd = [sys.executable, "-m", "adaptertune", "speed", *cmd, "--json", str(out)]
            print(f"## {preset}\n$ {' '.join(cmd[1:])}", flush=True)
            if subprocess.run(cmd).returncode != 0:
                return 1
        latest = sorted(RESULTS.glob(f"{preset}-*.json"))
        if latest:
            print("\n".join(targets(preset, json.loads(latest[-1].read_text())) + compare(preset)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
