"""Collect run folders into records and aggregate them over seeds into cells, protocol-checked.

A cell's runs are its replicates: one per seed, or with k-fold cross-validation one per (seed, fold)
(:attr:`RunRecord.pair`, the key the paired statistics match methods by).

A cell is (dataset, backbone, variant), where the variant is the method plus its identity (its options, as
:meth:`~adaptertune.methods.Method.identity` says), named by its label (``adapter r=16``, ``lora r=8 qkv+mlp``,
``head``): LoRA on qkv and on qkv+mlp are two cells. Runs share a cell only when they differ in the seed
alone: same protocol (the data itself: dataset, folder, classes and image counts; resolution,
normalization, augmentation, epochs, selection rule, split seed, subsets) and same setup
(hyper-parameters, backbone args and weights). Anything else is refused, or with
``split_protocols`` shown as separate cells labelled by what differs (``head [epochs=2]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_keys import flatten_config, options_section
from ..errors import AdapterTuneError, CheckpointError
from ..methods import METHODS
from ..runs import folder as rf
from ..runs.summary import CELL_FREE_KEYS, RunStatus
from .loss_curve import loss_stats
from .values import plain

__all__ = [
    "Cell",
    "ProtocolMismatchError",
    "RunRecord",
    "aggregate",
    "budget_limited",
    "budget_note",
    "collect_runs",
    "epoch_cap",
    "mean_std",
    "pair_label",
    "readable",
    "unreadable_counts",
    "variant_identity",
    "variant_label",
]

# Protocol fields that tell a cell's replicates apart (like the seed): not part of its setup.
_REPLICATE_PROTOCOL_KEYS = ("cv_fold",)


class ProtocolMismatchError(AdapterTuneError, ValueError):
    """Runs that differ in more than the seed would be averaged into one cell."""


@dataclass
class RunRecord:
    """One run folder as the report sees it."""

    run: str  # folder, relative to the results dir
    status: RunStatus  # the folder's state (success, failed, interrupted, incomplete, corrupt, running)
    dataset: str = ""
    backbone: str = ""
    method: str = ""
    variant: str = ""
    rank: int | None = None
    seed: int | None = None
    test_acc: float | None = None
    test_acc_last: float | None = None
    best_val_acc: float | None = None
    best_epoch: int | None = None  # the selected epoch
    stopped_epoch: int | None = None  # the epoch early stopping ended training at (None: it did not stop it)
    trainable_params: int | None = None
    total_params: int | None = None
    train_seconds: float | None = None
    lr: float | None = None  # the learning rate the run trained with (tuned or not)
    tuning: dict[str, Any] | None = None  # how it was selected on validation (summary.json ``tuning``)
    num_classes: int | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)  # images per split the run used (train/val/test)
    unreadable: dict[str, int | None] = field(default_factory=dict)  # of those, skipped unreadable (None: unknown)
    protocol: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)  # protocol + seed-independent config
    setup_id: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    fold: int | None = None  # cross-validation fold (protocol cv_fold), None without CV
    adapter: dict[str, Any] = field(default_factory=dict)  # the method's options as configured (empty: none)
    identity: dict[str, Any] = field(default_factory=dict)  # the method's identity of them (a cell holds one)
    loss_auc: float | None = None  # mean training loss over all steps (reports/loss_curve.py)
    diverged: bool | None = None  # the divergence rule of reports/loss_curve.py
    predictions: Path | None = None  # the run's per-image test predictions file, when it wrote one

    @property
    def pair(self) -> Any:
        """What paired statistics match runs of two methods by: the seed, or ``(seed, fold)`` with CV."""
        return self.seed if self.fold is None else (self.seed, self.fold)


def pair_label(pair: Any) -> str:
    """``3`` for seed 3, ``3/f1`` for seed 3 fold 1."""
    return f"{pair[0]}/f{pair[1]}" if isinstance(pair, tuple) else str(pair)


def budget_limited(run: RunRecord, cap: int | None) -> bool:
    """Whether ``run`` trained to its epoch cap ``cap`` without early stopping ending it."""
    epochs = max((int(m["epoch"]) for m in run.history if "epoch" in m), default=0)
    return run.stopped_epoch is None and cap is not None and epochs >= cap


def epoch_cap(run: RunRecord) -> int | None:
    """The run's configured epoch cap (``train.epochs``), None where not recorded."""
    cap = run.setup.get("train.epochs")
    return int(cap) if cap is not None else None


def budget_note(*cells: Cell) -> str:
    """``budget-limited: 2/3 runs of adapter r=16 at the 8-epoch cap`` for each of ``cells`` with runs at their
    cap (:func:`budget_limited`), ``""`` when none: a longer budget may reverse a verdict between them."""
    parts = []
    for c in cells:
        caps = {epoch_cap(r) for r in c.runs}
        hit = sum(budget_limited(r, epoch_cap(r)) for r in c.runs)
        if hit:
            cap = f"the {caps.pop()}-epoch cap" if len(caps) == 1 else "their epoch caps"
            parts.append(f"{hit}/{c.n} runs of {c.variant} at {cap}")
    return "budget-limited: " + ", ".join(parts) if parts else ""


@dataclass
class Cell:
    dataset: str
    backbone: str
    variant: str
    method: str
    rank: int | None
    runs: list[RunRecord]
    setup_id: str

    @property
    def accs(self) -> dict[int, float]:
        """Accuracy per replicate (:attr:`RunRecord.pair`: the seed, or (seed, fold))."""
        return {r.pair: r.test_acc for r in self.runs}

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return mean_std([r.test_acc for r in self.runs])[0]

    @property
    def std(self) -> float:
        return mean_std([r.test_acc for r in self.runs])[1]

    @property
    def trainable_params(self) -> int:
        return int(self.runs[0].trainable_params or 0)

    @property
    def num_classes(self) -> int | None:
        return self.runs[0].num_classes

    @property
    def chance(self) -> float | None:
        """Top-1 % of guessing uniformly (100 / classes), None when the class count is not recorded."""
        return 100.0 / self.num_classes if self.num_classes else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def variant_label(method: str, options: dict[str, Any] | None) -> str:
    """How a report names a variant: the method's own label (:meth:`~adaptertune.methods.Method.label`, e.g.
    ``adapter r=16 last:6 init=small``, ``lora r=8 qkv+mlp``, ``head``); see :func:`variant_identity`."""
    return variant_identity(method, options)[0]


def variant_identity(method: str, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(label, identity) of ``method`` with the options a run recorded (defaults filled, as the method resolves
    them). A method not registered here (a plugin not loaded) or options it no longer reads are named by
    every recorded option, so distinct variants still never share a cell."""
    options = options or None
    if method in METHODS:
        info = METHODS.get(method)
        try:
            resolved = info.resolve(options)
        except AdapterTuneError:
            pass
        else:
            return info.label(resolved), info.identity(resolved)
    shown = dict(options or {})
    parts = [method, *([f"r={shown.pop('rank')}"] if "rank" in shown else [])]
    return " ".join([*parts, *(f"{k}={readable(v)}" for k, v in sorted(shown.items()))]), dict(options or {})


def _setup(summary: Any, config: dict[str, Any] | None) -> dict[str, Any]:
    setup = {f"protocol.{k}": v for k, v in summary.protocol.items() if k not in _REPLICATE_PROTOCOL_KEYS}
    if not str(summary.weights_tag).startswith("random-init"):  # random weights follow the seed
        setup["weights_sha256"] = summary.weights_sha256
    if config:
        for k, v in flatten_config(config).items():
            # the method's options are the variant's identity, not its setup
            if k not in CELL_FREE_KEYS and k.partition(".")[0] in ("backbone", "data", "train"):
                setup[k] = v
    return setup


def _read_run(run_dir: Path, rel: str) -> RunRecord | None:
    """The run's record; None for a tuning run (a learning-rate search run: validated, never tested)."""
    state = rf.read_state(run_dir)
    if state.summary is not None and state.summary.tuning_run:
        return None
    if state.status is not RunStatus.SUCCESS:
        detail = state.describe() or ("interrupted or still running" if state.status is RunStatus.INCOMPLETE else "")
        if state.status is RunStatus.FAILED and state.summary is not None and state.summary.protocol:
            return _failed_run(rel, state.summary, state.config, detail)
        return RunRecord(rel, state.status, error=detail)
    s, config = state.summary, state.config
    try:
        history = rf.read_metrics(run_dir)
    except CheckpointError as e:
        return RunRecord(rel, RunStatus.CORRUPT, error=str(e))
    stats = loss_stats(history)
    return RunRecord(
        rel,
        RunStatus.SUCCESS,
        **_identity(s, config),
        seed=int(s.seed),
        test_acc=float(s.test_acc),
        test_acc_last=s.test_acc_last,
        best_val_acc=s.best_val_acc,
        best_epoch=s.best_epoch,
        stopped_epoch=s.stopped_epoch,
        train_seconds=s.train_seconds,
        lr=((config or {}).get("train") or {}).get("lr"),
        tuning=s.tuning,
        num_classes=s.num_classes or len(s.protocol.get("classes") or []) or None,
        split_sizes=dict(s.split_sizes or {}),
        unreadable=unreadable_counts(s),
        history=history,
        loss_auc=stats[0] if stats else None,
        diverged=stats[1] if stats else None,
        predictions=p if (p := run_dir / rf.PREDICTIONS_FILE).is_file() else None,
    )


def _identity(s: Any, config: dict[str, Any] | None) -> dict[str, Any]:
    """The fields that place a run (finished or failed) in a cell: dataset, variant, setup, fold, counts."""
    adapter, setup = _adapter(s, config), _setup(s, config)
    variant, identity = variant_identity(s.method, adapter)
    return {
        "dataset": s.dataset,
        "backbone": s.backbone,
        "method": s.method,
        "variant": variant,
        "identity": identity,
        "rank": s.rank,
        "trainable_params": s.trainable_params,
        "total_params": s.total_params,
        "protocol": s.protocol,
        "setup": setup,
        "setup_id": hashlib.sha1(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()[:8],
        "fold": s.protocol.get("cv_fold"),
        "adapter": adapter or {},
    }


def _adapter(s: Any, config: dict[str, Any] | None) -> dict[str, Any] | None:
    return options_section(config) or (
        {"rank": s.rank, "placement": s.placement or "all"} if s.rank is not None else None
    )


def _failed_run(rel: str, s: Any, config: dict[str, Any] | None, detail: str) -> RunRecord:
    """A run that stopped after its setup was known: identified like a finished one (no results), so the
    init ablation counts a run stopped by a non-finite loss as diverged."""
    return RunRecord(
        rel,
        RunStatus.FAILED,
        **_identity(s, config),
        seed=s.seed,
        error=detail,
        diverged=True if (s.error or "").startswith("NonFiniteLossError") else None,
    )


def collect_runs(results_dir: str | Path, exclude: Path | None = None) -> list[RunRecord]:
    """Every run folder under ``results_dir`` (any depth), in path order; ``exclude`` is not searched, nor
    are hidden folders (``.NAME.overwrite``: a replacement run still training). Tuning runs are left out."""
    root = Path(results_dir)
    if not root.is_dir():
        raise AdapterTuneError(f"Results folder '{results_dir}' does not exist.")
    skip = exclude.resolve() if exclude else None
    records = []
    for dirpath, dirnames, filenames in os.walk(root):
        path = Path(dirpath)
        if skip is not None and path.resolve() == skip:
            dirnames.clear()
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if rf.is_run_folder(filenames):
            dirnames.clear()  # run folders do not nest
            if (record := _read_run(path, str(path.relative_to(root)))) is not None:
                records.append(record)
    return records


def unreadable_counts(s: Any) -> dict[str, int | None]:
    """Unreadable images per split of a run summary, each counted once; a summary written before
    ``unreadable_images`` gives its test count and None (unknown) for a train split that skipped some."""
    if s.unreadable_images:
        return {k: int(v) for k, v in s.unreadable_images.items() if v}
    legacy: dict[str, int | None] = {"test": s.skipped_test_images} if s.skipped_test_images else {}
    return legacy | ({"train": None} if s.skipped_images else {})


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def readable(value: Any) -> str:
    """A value as a person reads it: floats to 4 significant digits (0.3, not 0.30000000000000004)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(readable(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {readable(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, str) else str(value)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return [f"{k}: {_clip(plain(a.get(k)), 80)} vs {_clip(plain(b.get(k)), 80)}" for k in keys]


def _short(key: str, value: Any) -> str:
    """A label-sized value: a folder's name, a list or mapping without brackets."""
    if key.endswith("root") and isinstance(value, str):
        return Path(value).name
    if isinstance(value, list):
        return _clip(",".join(v if isinstance(v, str) else readable(v) for v in value), 24)
    if isinstance(value, dict):
        return _clip(",".join(f"{k}:{readable(v)}" for k, v in value.items()), 24)
    return _clip(readable(value) if isinstance(value, float) else str(value), 16)


def _setup_label(setup: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """``epochs=2, lr=0.001``: this setup's values of the keys that differ between ``others``."""
    keys = sorted(k for k in setup if any(o.get(k) != setup.get(k) for o in others))
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(k, setup.get(k))}" for k in keys)


def _distinct_labels(records: list[RunRecord]) -> list[RunRecord]:
    """The records, each variant keyed by (method, identity): two identities that one label would merge (a
    method whose label leaves out an identity field) get the fields that differ appended (``x r=4 [k=1]``)."""
    by_label: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        ident = json.dumps([r.method, r.identity], sort_keys=True, default=str)
        by_label.setdefault((r.dataset, r.backbone, r.variant), {})[ident] = r.identity
    out = []
    for r in records:
        idents = list(by_label[(r.dataset, r.backbone, r.variant)].values())
        if len(idents) > 1:
            keys = sorted(
                k for k in {k for i in idents for k in i} if any(i.get(k) != r.identity.get(k) for i in idents)
            )
            r = dataclasses.replace(
                r, variant=f"{r.variant} [{', '.join(f'{k}={_short(k, r.identity.get(k))}' for k in keys)}]"
            )
        out.append(r)
    return out


def aggregate(records: list[RunRecord], split_protocols: bool = False) -> list[Cell]:
    """Group successful runs into cells over seeds.

    Raises:
        ProtocolMismatchError: runs of one cell differ in protocol or setup (unless ``split_protocols``), or
            one cell holds the same seed twice.
    """
    groups: dict[tuple[str, str, str], dict[str, list[RunRecord]]] = {}
    for r in _distinct_labels([r for r in records if r.status is RunStatus.SUCCESS]):
        groups.setdefault((r.dataset, r.backbone, r.variant), {}).setdefault(r.setup_id, []).append(r)
    cells = []
    for (dataset, backbone, variant), by_setup in groups.items():
        if len(by_setup) > 1 and not split_protocols:
            (a, *_), (b, *_) = list(by_setup.values())[:2]
            diff = _differences(a.setup, b.setup)
            raise ProtocolMismatchError(
                f"Refusing to average runs with different protocols into one cell ({dataset}, {backbone}, {variant}): "
                f"{'; '.join(diff[:4])} (e.g. runs '{a.run}' and '{b.run}'). Report them separately, or pass "
                "--split-protocols to show one cell per protocol."
            )
        for setup_id, runs in by_setup.items():
            pairs = [r.pair for r in runs]
            if len(set(pairs)) != len(pairs):
                dup = next(s for s in pairs if pairs.count(s) > 1)
                where = [r.run for r in runs if r.pair == dup]
                what = f"seed {dup[0]} fold {dup[1]}" if isinstance(dup, tuple) else f"seed {dup}"
                raise ProtocolMismatchError(
                    f"Cell ({dataset}, {backbone}, {variant}) has {what} twice: {', '.join(where)}; "
                    "remove the duplicate run folder."
                )
            label = variant
            if len(by_setup) > 1:
                label = f"{variant} [{_setup_label(runs[0].setup, [rs[0].setup for rs in by_setup.values()])}]"
            runs = sorted(runs, key=lambda r: (r.seed, -1 if r.fold is None else r.fold))
            cells.append(Cell(dataset, backbone, label, runs[0].method, runs[0].rank, runs, setup_id))
    return cells
