"""The init ablation: adapter init (zero / small / random) x learning rate, from the run records (pure).

A family is the runs of one (dataset, backbone, method, adapter options other than ``init``, setup other
than ``train.lr``); it is an ablation when it holds at least two inits. Each (init, lr) row gives the test
accuracy (mean ± std over the runs that finished), the mean loss AUC and the divergence rate k/n (rules in
:mod:`.loss_curve`). A run stopped by a non-finite loss has no accuracy, but counts in n and as diverged.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..runs.summary import RunStatus
from .collect import RunRecord, mean_std, variant_label
from .loss_curve import DIVERGENCE_RULE, LOSS_AUC_RULE

__all__ = ["AblationRow", "ablation_html", "ablation_markdown", "init_ablation"]

_INIT_ORDER = {"zero": 0, "small": 1, "random": 2}
_NOTE = (
    f"Accuracy: top-1 test %, mean ± std over the runs that finished (n in brackets). {LOSS_AUC_RULE}. "
    f"{DIVERGENCE_RULE}; a run stopped by a non-finite loss has no accuracy but counts as diverged."
)


@dataclass
class AblationRow:
    """One (init, lr) of an ablation family."""

    dataset: str
    backbone: str
    variant: str  # the family's label without init (``adapter r=16``)
    init: str
    lr: float | None
    accs: list[float] = field(default_factory=list)  # finished runs, by seed
    accs_last: list[float] = field(default_factory=list)
    aucs: list[float] = field(default_factory=list)
    diverged: int = 0
    n: int = 0  # finished runs + runs stopped by a non-finite loss

    @property
    def acc(self) -> tuple[float, float]:
        return mean_std(self.accs)

    @property
    def auc(self) -> float:
        return sum(self.aucs) / len(self.aucs) if self.aucs else math.nan


def _counted(r: RunRecord) -> bool:
    return bool(r.adapter) and (r.status is RunStatus.SUCCESS or (r.status is RunStatus.FAILED and bool(r.diverged)))


def _family(r: RunRecord) -> tuple[str, ...]:
    options = {k: v for k, v in r.adapter.items() if k != "init"}
    setup = {k: v for k, v in r.setup.items() if k != "train.lr"}
    return (
        r.dataset,
        r.backbone,
        r.method,
        json.dumps(options, sort_keys=True, default=str),
        json.dumps(setup, sort_keys=True, default=str),
    )


def init_ablation(records: list[RunRecord]) -> list[AblationRow]:
    """The rows of every family holding two or more adapter inits (empty: no init ablation in the results)."""
    families: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in records:
        if _counted(r):
            families.setdefault(_family(r), []).append(r)
    out = []
    for runs in families.values():
        if len({r.adapter.get("init", "zero") for r in runs}) < 2:
            continue
        rows: dict[tuple[str, Any], AblationRow] = {}
        for r in sorted(runs, key=lambda r: (r.seed or 0, r.fold or 0)):
            init, lr = str(r.adapter.get("init", "zero")), r.setup.get("train.lr")
            label = variant_label(r.method, {**r.adapter, "init": "zero"})
            row = rows.setdefault((init, lr), AblationRow(r.dataset, r.backbone, label, init, lr))
            row.n += 1
            row.diverged += bool(r.diverged)
            if r.status is RunStatus.SUCCESS:
                row.accs.append(float(r.test_acc))
                if r.test_acc_last is not None:
                    row.accs_last.append(float(r.test_acc_last))
                if r.loss_auc is not None and math.isfinite(r.loss_auc):
                    row.aucs.append(r.loss_auc)
        out += rows.values()
    key = lambda a: (a.dataset, a.backbone, a.variant, _INIT_ORDER.get(a.init, 9), a.init, a.lr or 0.0)  # noqa: E731
    return sorted(out, key=key)


def _cells(a: AblationRow) -> list[str]:
    m, s = a.acc
    acc = "-" if not a.accs else (f"{m:.2f} ± {s:.2f}" if len(a.accs) > 1 else f"{m:.2f}") + f" ({len(a.accs)})"
    last = "-" if not a.accs_last else f"{mean_std(a.accs_last)[0]:.2f}"
    auc = "-" if math.isnan(a.auc) else f"{a.auc:.4f}"
    lr = "-" if a.lr is None else f"{a.lr:g}"
    return [a.dataset, a.backbone, a.variant, a.init, lr, acc, last, auc, f"{a.diverged}/{a.n}"]


_HEAD = ["dataset", "backbone", "variant", "init", "lr", "test acc", "last-epoch acc", "loss AUC", "diverged"]


def ablation_markdown(rows: list[AblationRow]) -> str:
    lines = ["| " + " | ".join(_HEAD) + " |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(_cells(a)) + " |" for a in rows]
    return "\n".join(lines) + f"\n\n{_NOTE}\n"


def ablation_html(rows: list[AblationRow]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEAD)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _cells(a)) + "</tr>" for a in rows)
    return f"<p>{esc(_NOTE)}</p><table><tr>{head}</tr>{body}</table>"
