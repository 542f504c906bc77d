"""Coverage of the elbow rules on simulated sweeps at the real grids, the measured gains and noise (issue 26).

Both rules of ``adaptertune elbow`` are applied to paired-seed sweeps simulated from named true curves
(``analysis.synthetic.TRUTHS``: still rising past the grid, saturating, knee at 8, knee at 32, knee at the
grid's top, flat) on the grids actually swept: r = 1..64 by doubling (the validation sweeps) and
r = 0 (head only), 1..256 (the capacity study). The truth's answer is the one a user asks for: the
smallest swept rank within ``delta`` points of the truth's best swept rank, or "not reached" when one more
doubling past the grid would gain more than ``delta`` (``synthetic.true_answer``).

Per grid, truth, number of seeds and rule it reports:

- correct: the share of sweeps whose answer equals the truth's answer;
- within delta: the share whose recommended rank (the elbow; the largest rank for "not reached"; none
  for "inconclusive") has a true accuracy within ``delta`` of the grid's best;
- too small: the share whose recommended rank is ``delta`` or more below the grid's best (the error the
  effect-size rule bounds by alpha);
- false elbow: for a truth still rising past the grid, the share of sweeps that claim an elbow at all, and
  one below the largest rank;
- inconclusive (effect-size rule only) and the seeds needed for 80% correct (of the seed counts run).

Defaults are the measured values (``--calibrate`` re-derives them from the committed sweeps): gain 1.3
points per doubling below a knee, 0.15 after it, run-to-run noise sd 0.95 points (seed effects removed),
seed effect sd 0.6.

    PYTHONPATH=src python benchmarks/elbow_coverage.py --calibrate
    PYTHONPATH=src python benchmarks/elbow_coverage.py --replicates 1000 \\
        --out results/science/elbow-coverage          # writes -tables.md and .csv; ~5 minutes on one core

Pure numpy/scipy.
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import time
from pathlib import Path

import numpy as np

from adaptertune.analysis.elbow import fit_elbow, paired_table
from adaptertune.analysis.elbow_effect import DEFAULT_DELTA, effect_index
from adaptertune.analysis.elbow_table import read_rows
from adaptertune.analysis.synthetic import TRUTHS, simulate, true_answer, truth_curve

GRIDS = {"1..64": (1, 2, 4, 8, 16, 32, 64), "0,1..256": (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)}
# (gain per doubling, run noise sd) from --calibrate: the first is the main table's; the others bracket it
PROFILES = {
    "typical (Fashion-MNIST, validation grid)": (1.3, 0.95),
    "flat, low noise (8-epoch sweeps)": (0.5, 0.6),
    "steep, noisy (MNIST-5k)": (2.8, 1.5),
}
SWEEPS = "results/science/rank-*-results.csv results/science/rank-validation/*-results.csv"


def calibrate(patterns: str = SWEEPS) -> list[dict]:
    """Per committed sweep: grid, seeds, block-model residual sd, seed sd, mean gain per doubling (first to last)."""
    out = []
    for path in sorted(p for pat in patterns.split() for p in glob.glob(pat)):
        rows = [r for r in read_rows(path) if r.get("status", "success") == "success"]
        ranks, _, y, _ = paired_table([(int(r["rank"]), r["seed"], float(r["test_acc"])) for r in rows])
        n, k = y.shape
        resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
        sigma = math.sqrt((resid**2).sum() / ((n - 1) * (k - 1)))
        seed_sd = math.sqrt(max(np.var(y.mean(1), ddof=1) - sigma**2 / k, 0.0))
        m = y.mean(0)
        gain = (m[-1] - m[0]) / math.log2(ranks[-1] / ranks[0])
        out.append(
            dict(
                sweep=Path(path).name,
                ranks=f"{ranks[0]}..{ranks[-1]}",
                seeds=n,
                sigma=sigma,
                seed_sd=seed_sd,
                gain=gain,
            )
        )
    return out


def _paired_index(y: np.ndarray, alpha: float) -> np.ndarray:
    """The paired-significance rule per sweep (``fit_elbow`` defaults, no bootstrap or fits): index, K not reached."""
    _, n, k = y.shape
    ranks = list(range(k))  # the rule only orders the ranks
    out = np.empty(len(y), dtype=int)
    for b in range(len(y)):
        pts = [(r, s, float(y[b, s, r])) for r in ranks for s in range(n)]
        e = fit_elbow(pts, alpha=alpha, n_boot=0, families=()).elbow
        out[b] = k if e is None else e
    return out


def score(idx: np.ndarray, truth_idx: int, mu: np.ndarray, delta: float) -> dict:
    """The shares of one cell from the rule's answers (index; K not reached; -1 inconclusive)."""
    k = len(mu)
    rec = np.where(idx == k, k - 1, idx)  # "not reached" recommends the largest swept rank
    ok = (idx >= 0) & (mu[np.clip(rec, 0, k - 1)] > mu.max() - delta)
    small = (idx >= 0) & (mu[np.clip(rec, 0, k - 1)] <= mu.max() - delta)
    rising = truth_idx == k
    return {
        "correct": float(np.mean(idx == truth_idx)),
        "within_delta": float(np.mean(ok)),
        "too_small": float(np.mean(small)),
        "false_elbow": float(np.mean((idx >= 0) & (idx < k))) if rising else None,
        "false_elbow_below_top": float(np.mean((idx >= 0) & (idx < k - 1))) if rising else None,
        "inconclusive": float(np.mean(idx < 0)),
        "answers": {int(v): int(c) for v, c in zip(*np.unique(idx, return_counts=True))},
    }


def _label(i: int, ranks: tuple[int, ...]) -> str:
    return "not reached" if i == len(ranks) else "inconclusive" if i < 0 else str(ranks[i])


def run(args: argparse.Namespace, gain: float, run_sd: float, profile: str) -> list[dict]:
    rows = []
    curve = dict(gain=gain, after=args.after)
    for gname, ranks in GRIDS.items():
        for t_i, truth in enumerate(TRUTHS):
            mu = truth_curve(truth, ranks, **curve)
            t_idx = true_answer(truth, ranks, args.delta, **curve)
            for n in args.seeds:
                rng = np.random.default_rng([args.seed, t_i, n, len(ranks)])
                y = simulate(rng, mu, n, args.replicates, run_sd=run_sd, seed_sd=args.seed_sd)
                rules = {"effect": effect_index(y, args.delta, args.alpha)}
                if not args.effect_only:
                    rules["paired"] = _paired_index(y, args.alpha)
                for rule, idx in rules.items():
                    s = score(idx, t_idx, mu, args.delta)
                    answers = " ".join(f"{_label(i, ranks)}:{c}" for i, c in s.pop("answers").items())
                    rows.append(
                        dict(
                            profile=profile,
                            gain=gain,
                            run_sd=run_sd,
                            grid=gname,
                            truth=truth,
                            answer=_label(t_idx, ranks),
                            seeds=n,
                            rule=rule,
                            **s,
                            answers=answers,
                        )
                    )
    return rows


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def _needed(rows: list[dict], key: str, seeds: list[int]) -> str:
    ok = [r["seeds"] for r in rows if r[key] >= 0.8]
    return str(min(ok)) if ok else f"> {max(seeds)}"


def markdown(rows: list[dict], args: argparse.Namespace, seconds: float) -> str:
    main_profile = next(iter(PROFILES))
    gain, run_sd = PROFILES[main_profile]
    lines = [
        f"Main table, {main_profile}: gain {gain:g} points per doubling (below a knee), {args.after:g} after it, "
        f"run noise sd {run_sd:g}, seed sd {args.seed_sd:g}; delta {args.delta:g} points, alpha {args.alpha:g}; "
        f"{args.replicates} simulated sweeps per cell ({seconds:.0f} s in all).",
        "",
        "| grid | truth | true answer | seeds | rule | correct | within delta | too small | false elbow (below top) "
        "| inconclusive | answers |",
        "|---|---|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for r in (r for r in rows if r["profile"] == main_profile):
        fe = "" if r["false_elbow"] is None else f"{_pct(r['false_elbow'])} ({_pct(r['false_elbow_below_top'])})"
        inc = _pct(r["inconclusive"]) if r["rule"] == "effect" else ""
        lines.append(
            f"| {r['grid']} | {r['truth']} | {r['answer']} | {r['seeds']} | {r['rule']} | {_pct(r['correct'])} | "
            f"{_pct(r['within_delta'])} | {_pct(r['too_small'])} | {fe} | {inc} | {r['answers']} |"
        )
    rules = sorted({r["rule"] for r in rows})
    lines += [
        "",
        "Seeds needed (of " + ", ".join(map(str, args.seeds)) + ") for 80% correct / 80% within delta, and the "
        "largest too-small share over the seed counts:",
        "",
        "| profile | grid | truth | " + " | ".join(rules) + " |",
        "|---|---|---|" + "---|" * len(rules),
    ]
    for profile in PROFILES:
        for gname in GRIDS:
            for truth in TRUTHS:
                cells = []
                for rule in rules:
                    cell = [
                        r
                        for r in rows
                        if (r["profile"], r["grid"], r["truth"], r["rule"]) == (profile, gname, truth, rule)
                    ]
                    worst = max(r["too_small"] for r in cell)
                    cells.append(
                        f"{_needed(cell, 'correct', args.seeds)} / {_needed(cell, 'within_delta', args.seeds)}; "
                        f"too small <= {_pct(worst)}"
                    )
                lines.append(f"| {profile} | {gname} | {truth} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=1000)
    p.add_argument("--seeds", default="3,5,10,20", help="comma-separated numbers of seeds per sweep")
    p.add_argument("--after", type=float, default=0.15, help="points per doubling after a knee")
    p.add_argument("--seed-sd", type=float, default=0.6)
    p.add_argument("--delta", type=float, default=DEFAULT_DELTA)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--effect-only", action="store_true", help="skip the (slower) paired rule")
    p.add_argument("--calibrate", action="store_true", help="print the committed sweeps' noise and gains, then exit")
    p.add_argument("--out", default=None, metavar="PREFIX", help="write PREFIX-tables.md and PREFIX.csv")
    args = p.parse_args()
    if args.calibrate:
        cal = calibrate()
        print("| sweep | ranks | seeds | run noise sd | seed sd | gain per doubling |\n|---|---|---:|---:|---:|---:|")
        for c in cal:
            cols = (c["sweep"], c["ranks"], c["seeds"], f"{c['sigma']:.2f}", f"{c['seed_sd']:.2f}", f"{c['gain']:.2f}")
            print("| " + " | ".join(map(str, cols)) + " |")
        return
    args.seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    rows = [r for name, (gain, sd) in PROFILES.items() for r in run(args, gain, sd, name)]
    md = markdown(rows, args, time.perf_counter() - t0)
    print(md)
    if args.out:
        Path(f"{args.out}-tables.md").write_text(md)
        with open(f"{args.out}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
