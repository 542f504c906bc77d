"""The leaderboard: per (dataset, backbone) pair one row per cell, sorted by test accuracy, with its interval,
the paired gain against a reference cell, and what the cell cost (trainable parameters, measured step time,
analytic FLOPs, epochs, whether its runs stopped early or hit the epoch cap); plus the Pareto plot of test
accuracy against trainable parameters.

- Test accuracy: the mean over seeds with the 95% Student t-interval of that mean (seeds only: init, data order,
  and the subset where the seeds draw it; not test-set noise); beside it, where every run of the cell wrote
  predictions, the bootstrap interval over seeds and test images (:func:`.noise.accuracy_interval`).
- Gain: the cell against the reference over paired seeds (:func:`~adaptertune.reports.tables.paired_gain`),
  its 95% interval and verdict (:func:`gain_interval`: over seeds and test images where both cells wrote
  predictions, else the t-interval over seeds); the ``interval`` column names it and the noise it counts.
- ms per step: each run's summed ``epoch_seconds`` over its optimizer steps (``metrics.jsonl``), mean over
  seeds: training time measured under the sweep's own conditions (device, concurrent runs, data loading).
- GFLOPs per step: the method's analytic matmul FLOPs (:func:`~adaptertune.methods.flops.step_flops`) on the
  run's backbone geometry at its batch size (the configured ``train.batch_size``, or the training split where
  it is smaller), counting the whole forward every step (a cached frozen prefix is not subtracted).
- A run that trained to its epoch cap without early stopping ending it is budget-limited: validation might
  still have improved; its row says how many of its runs did.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import AdapterTuneError
from .collect import Cell, RunRecord, budget_limited, epoch_cap, mean_std
from .noise import accuracy_interval, seed_noise
from .plots import _axes, _params_axis, _plt, _save, pareto_front
from .stats import t_interval
from .tables import Gain, comparable, interval_text, paired_gain, sorted_variants

__all__ = [
    "DEFAULT_REFERENCE",
    "BoardRow",
    "board_markdown",
    "board_rows",
    "csv_rows",
    "gain_interval",
    "ms_per_step",
    "plot_pareto",
    "reference_cell",
]

DEFAULT_REFERENCE = "adapter"  # AdapterTune


@dataclass(frozen=True)
class BoardRow:
    dataset: str
    backbone: str
    variant: str
    method: str
    n: int  # seeds (replicates)
    acc: float  # mean test top-1 %
    acc_ci: tuple[float, float]  # 95% t-interval of the mean over seeds
    reference: str  # the reference cell's variant ("" when the pair has none)
    gain: Gain | None  # against the reference (None: this is the reference, or there is none or not paired)
    gain_ci: tuple[float, float]  # the 95% interval of the gain that decides its verdict (gain_interval names it)
    gain_verdict: str  # win / tie / loss from gain_ci ("" without a gain)
    gain_interval: str  # which interval gain_ci is
    trainable_params: int
    ms_per_step: float | None
    gflops_per_step: float | None
    gflops_note: str  # why there is no FLOP count ("" when there is)
    epochs: float  # mean epochs trained
    epoch_cap: int | None  # train.epochs
    stopped_early: int  # runs early stopping ended
    at_cap: int  # runs that trained to the cap (budget-limited)
    lr: str  # the learning rate(s) the runs trained with
    best_val: float | None  # mean best validation accuracy
    # 95% bootstrap interval of the mean over seeds and test images (nan: none; acc_all_noise_note says why)
    acc_all_noise: tuple[float, float] = (math.nan, math.nan)
    acc_all_noise_note: str = ""  # what it counts ("seeds (init, order) + 1000 test images"), or why it is missing

    @property
    def budget_limited(self) -> bool:
        return self.at_cap > 0


def ms_per_step(run: RunRecord) -> float | None:
    """Training milliseconds per optimizer step: summed ``epoch_seconds`` over the last ``step`` (None: not
    recorded)."""
    if not run.history or any("epoch_seconds" not in m or "step" not in m for m in run.history):
        return None
    steps = max(int(m["step"]) for m in run.history)
    return 1000.0 * math.fsum(float(m["epoch_seconds"]) for m in run.history) / steps if steps else None


def reference_cell(cells: list[Cell], reference: str = DEFAULT_REFERENCE) -> Cell | None:
    """The cell of one pair whose variant is ``reference``; else the one cell of method ``reference``; of
    several, the one with the best mean validation accuracy (then the fewest parameters). None: no such cell."""
    exact = [c for c in cells if c.variant == reference]
    if exact:
        return exact[0]
    of_method = [c for c in cells if c.method == reference]
    if not of_method:
        return None
    return min(of_method, key=lambda c: (-(_mean_val(c) or -math.inf), c.trainable_params, c.variant))


def _mean_val(c: Cell) -> float | None:
    vals = [r.best_val_acc for r in c.runs]
    return None if any(v is None for v in vals) else math.fsum(v for v in vals if v is not None) / len(vals)


@cache
def _geometry(name: str, args_json: str, num_classes: int) -> Any:
    from ..backbones import create_backbone
    from ..config import BackboneConfig
    from ..methods.flops import vit_geometry

    cfg = BackboneConfig(name=name, pretrained=False, args=json.loads(args_json))
    return vit_geometry(create_backbone(cfg, num_classes).model)


def _gflops(c: Cell) -> tuple[float | None, str]:
    """GFLOPs of one training step of the cell's first run, or None and why not."""
    from ..methods.flops import step_flops

    r = c.runs[0]
    name, args = r.setup.get("backbone.name") or r.backbone, r.setup.get("backbone.args") or {}
    batch = int(r.setup.get("train.batch_size") or 0)
    batch = min(batch, r.split_sizes["train"]) if r.split_sizes.get("train") else batch
    if not batch or not r.num_classes:
        return None, "batch size or class count not recorded"
    try:
        geom = _geometry(name, json.dumps(args, sort_keys=True), int(r.num_classes))
        return step_flops(geom, c.method, r.adapter or None).scaled(batch).total / 1e9, ""
    except AdapterTuneError as e:
        return None, str(e).splitlines()[0]


def board_rows(cells: list[Cell], reference: str = DEFAULT_REFERENCE) -> list[BoardRow]:
    """The leaderboard rows, pair by pair (sorted), each pair's rows by mean test accuracy (best first)."""
    out = []
    for pair in sorted({(c.dataset, c.backbone) for c in cells}):
        mine = [c for c in cells if (c.dataset, c.backbone) == pair]
        ref = reference_cell(mine, reference)
        for c in sorted(mine, key=lambda c: (-c.mean, c.variant)):
            out.append(_row(c, ref))
    return out


def _row(c: Cell, ref: Cell | None) -> BoardRow:
    accs = [r.test_acc for r in c.runs if r.test_acc is not None]
    cap = epoch_cap(c.runs[0])
    gain = paired_gain(c, ref) if ref is not None and ref is not c and comparable(c, ref) else None
    times = [t for t in map(ms_per_step, c.runs) if t is not None]
    flops, why = _gflops(c)
    lrs = sorted({r.lr for r in c.runs if r.lr is not None})
    epochs = [max((int(m["epoch"]) for m in r.history if "epoch" in m), default=0) for r in c.runs]
    iv = accuracy_interval(c)
    if isinstance(iv, str):
        all_noise = {"acc_all_noise_note": iv}
    elif math.isnan(iv.low):
        all_noise = {"acc_all_noise_note": f"one seed: no interval ({iv.n_images} test images)"}
    else:
        all_noise = {
            "acc_all_noise": (iv.low, iv.high),
            "acc_all_noise_note": f"{seed_noise(c)} + {iv.n_images} test images",
        }
    return BoardRow(
        c.dataset,
        c.backbone,
        c.variant,
        c.method,
        c.n,
        mean_std(accs)[0],
        t_interval(accs),
        ref.variant if ref is not None else "",
        gain,
        *(gain_interval(gain) if gain is not None else ((math.nan, math.nan), "", "")),
        c.trainable_params,
        sum(times) / len(times) if len(times) == c.n else None,
        flops,
        why,
        sum(epochs) / len(epochs),
        cap,
        sum(r.stopped_epoch is not None for r in c.runs),
        sum(budget_limited(r, cap) for r in c.runs),
        ", ".join(f"{lr:.3g}" for lr in lrs) or "-",
        _mean_val(c),
        **all_noise,
    )


def gain_interval(g: Gain) -> tuple[tuple[float, float], str, str]:
    """The interval shown for a gain, its verdict and what it counts: the paired bootstrap over seeds and test
    images where both cells have predictions (its verdict needs the t-interval to agree:
    :data:`~adaptertune.reports.bootstrap.ALL_NOISE_RULE`), else the t-interval over paired seeds."""
    if not math.isnan(g.all_noise[0]):
        return g.all_noise, g.all_noise_verdict, f"{g.all_noise_note} (bootstrap; verdict with t)"
    return g.ci, g.verdict, f"{g.noise or 'paired seeds'} (t)"


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None or math.isnan(x) or math.isinf(x) else format(x, fmt)


def csv_rows(rows: list[BoardRow]) -> list[dict[str, Any]]:
    """``leaderboard.csv``: one row per cell (rank = position by test accuracy within its pair)."""
    out, pos = [], {}
    for r in rows:
        pos[(r.dataset, r.backbone)] = pos.get((r.dataset, r.backbone), 0) + 1
        g = r.gain
        out.append(
            {
                "dataset": r.dataset,
                "backbone": r.backbone,
                "rank": pos[(r.dataset, r.backbone)],
                "variant": r.variant,
                "method": r.method,
                "n": r.n,
                "test_acc": f"{r.acc:.4f}",
                "test_acc_low": _num(r.acc_ci[0], ".4f"),
                "test_acc_high": _num(r.acc_ci[1], ".4f"),
                "test_acc_all_noise_low": _num(r.acc_all_noise[0], ".4f"),
                "test_acc_all_noise_high": _num(r.acc_all_noise[1], ".4f"),
                "test_acc_all_noise_covers": r.acc_all_noise_note,
                "reference": r.reference,
                "gain": _num(g.delta, ".4f") if g else "",
                "gain_low": _num(r.gain_ci[0], ".4f"),
                "gain_high": _num(r.gain_ci[1], ".4f"),
                "gain_verdict": r.gain_verdict,
                "gain_interval": r.gain_interval,
                "paired_seeds": g.seeds_shared if g else "",
                "trainable_params": r.trainable_params,
                "ms_per_step": _num(r.ms_per_step, ".2f"),
                "gflops_per_step": _num(r.gflops_per_step, ".6g"),
                "epochs": f"{r.epochs:.2f}",
                "epoch_cap": r.epoch_cap if r.epoch_cap is not None else "",
                "runs_stopped_early": r.stopped_early,
                "runs_at_cap": r.at_cap,
                "budget_limited": r.budget_limited,
                "lr": r.lr,
                "best_val_acc": _num(r.best_val, ".4f"),
            }
        )
    return out


def _stops(r: BoardRow) -> str:
    text = f"{r.stopped_early}/{r.n} early, {r.at_cap}/{r.n} at cap"
    return text + (" **budget-limited**" if r.budget_limited else "")


def board_markdown(rows: list[BoardRow]) -> str:
    """One table per pair and the notes that define its columns."""
    out = []
    for pair in dict.fromkeys((r.dataset, r.backbone) for r in rows):
        mine = [r for r in rows if (r.dataset, r.backbone) == pair]
        ref = mine[0].reference or "none"
        images = any(not math.isnan(r.acc_all_noise[0]) for r in mine)  # a column where a cell has the interval
        out += [
            f"**{pair[0]} / {pair[1]}** (reference: {ref})",
            "",
            "| # | cell | test top-1 % [95% CI, t: seeds] "
            + ("| [95% CI, bootstrap: seeds + test images] " if images else "")
            + "| gain vs reference [95% CI] | verdict | interval | trainable | ms/step | GFLOP/step | epochs "
            "| runs stopped | lr |",
            "|---:|---|---|" + ("---|" if images else "") + "---|---|---|---:|---:|---:|---:|---|---|",
        ]
        for i, r in enumerate(mine, 1):
            g = r.gain
            gain = f"{g.delta:+.2f} {interval_text(*r.gain_ci)}" if g else ("(reference)" if r.variant == ref else "-")
            cap = f" / {r.epoch_cap}" if r.epoch_cap is not None else ""
            out.append(
                f"| {i} | {r.variant} | {r.acc:.2f} {_acc_ci(r)} "
                + (f"| {_acc_all_noise(r)} " if images else "")
                + f"| {gain} | {r.gain_verdict or '-'} "
                f"| {r.gain_interval or '-'} | {r.trainable_params:,} | {_num(r.ms_per_step, '.1f') or '-'} "
                f"| {_num(r.gflops_per_step, '.4g') or '-'} | {r.epochs:.1f}{cap} | {_stops(r)} | {r.lr} |"
            )
        out.append("")
    notes = sorted({f"{r.variant}: {r.gflops_note}" for r in rows if r.gflops_note})
    out += [
        "Test accuracy: mean over seeds, 95% t-interval of that mean (seed noise only); where every run of a "
        "cell wrote predictions, beside it the 95% bootstrap interval over seeds and test images (one image draw "
        "per replicate shared by every seed), which also counts the noise of a finite test set; the cell says "
        "what it counts, or why it is missing. "
        "Gain: paired seeds against the reference cell (AdapterTune by default; of several, the best by "
        "validation); the interval column names the interval shown and what it counts (with test images: the "
        "bootstrap over seeds and test images, win / loss only when it and the t-interval agree; else the "
        "t-interval, win / loss when it excludes 0). "
        "ms/step: summed epoch_seconds over optimizer steps, mean over seeds, measured under the sweep's own "
        "conditions (concurrent runs, data loading included), not an isolated benchmark. "
        "GFLOP/step: analytic matmul FLOPs of one step at the run's batch (whole forward, a cached prefix not "
        "subtracted). epochs: mean trained / cap. A run at its cap was not stopped by early stopping: "
        "**budget-limited**, its validation might still have improved.",
        *(["", "No FLOP count for " + "; ".join(notes) + "."] if notes else []),
    ]
    return "\n".join(out) + "\n"


def _acc_all_noise(r: BoardRow) -> str:
    if math.isnan(r.acc_all_noise[0]):
        return f"- ({r.acc_all_noise_note})"
    return f"{interval_text(*r.acc_all_noise).replace('+', '')} ({r.acc_all_noise_note})"


def _acc_ci(r: BoardRow) -> str:
    return interval_text(*r.acc_ci).replace("+", "") if r.n > 1 else "(1 seed)"


def plot_pareto(rows: list[BoardRow], path: Path, cells: list[Cell]) -> Path | None:
    """Mean test accuracy with its 95% interval vs trainable parameters (log axis), one subplot per pair, every
    point labelled, the Pareto frontier drawn (hollow: budget-limited cells); the y axis spans the points (no
    chance line: it would squeeze the differences that matter)."""
    pairs = list(dict.fromkeys((r.dataset, r.backbone) for r in rows))
    if not pairs:
        return None
    plt = _plt()
    fig, axes = _axes(plt, len(pairs), width=6.0, height=4.4)
    for ax, pair in zip(axes.flat, pairs):
        mine = [r for r in rows if (r.dataset, r.backbone) == pair]
        front = pareto_front([(r.trainable_params, r.acc) for r in mine])
        ax.step(
            [p[0] for p in front], [p[1] for p in front], where="post", color="k", alpha=0.5, label="Pareto frontier"
        )
        order = sorted_variants([c for c in cells if (c.dataset, c.backbone) == pair])  # the budget plots' colours
        for i, r in enumerate(sorted(mine, key=lambda r: r.trainable_params)):
            lo, hi = r.acc_ci
            err = [[r.acc - lo], [hi - r.acc]] if r.n > 1 else None
            color = f"C{order.index(r.variant) % 10}"
            on = (r.trainable_params, r.acc) in front
            mfc = "none" if r.budget_limited else color
            ax.errorbar(
                r.trainable_params, r.acc, yerr=err, fmt="o", color=color, mfc=mfc, ms=7 if on else 5, capsize=3
            )
            ax.annotate(  # neighbours by parameters alternate above and below their point
                r.variant,
                (r.trainable_params, r.acc),
                xytext=(5, 5 if i % 2 == 0 else -11),
                textcoords="offset points",
                fontsize=7,
                color=color,
            )
        ax.margins(x=0.2)
        _params_axis(ax, [r.trainable_params for r in mine])
        ax.set(xlabel="trainable parameters", ylabel="top-1 test accuracy (%, 95% CI over seeds)")
        ax.set_title(f"{pair[0]} / {pair[1]} (hollow: budget-limited)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    return _save(fig, plt, path)
