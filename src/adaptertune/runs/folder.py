"""The run folder: its files, its state, and every write to it outside the training loop.

A run folder holds ``config.yaml`` (the resolved config that ran), ``metrics.jsonl`` (one line per epoch),
``summary.json`` (a :class:`~adaptertune.runs.summary.RunSummary`), ``adaptertune_weights.safetensors`` (the
trained tensors with their identity; named so it is not taken for an AdapterHub ``adapter.safetensors`` or a
PEFT ``adapter_model.safetensors``; folders written under the old name ``adapter.safetensors`` still load),
while training ``checkpoint.safetensors`` (the resume state), optionally ``tensorboard/``, ``skipped.txt`` (the
images it could not read, :mod:`.skipped`), for a tested run ``predictions.npz`` (the selected model's outputs
per test image, :mod:`.predictions`) and for a sweep point ``point.json`` (its grid values). Beside it live
the folder's lock (``.NAME.lock``) and, while ``--overwrite`` trains a replacement, ``.NAME.overwrite`` (swapped
in when that run has finished). Sweeps and reports ask :func:`read_state`; they never parse these files themselves.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_text
from ..errors import CheckpointError, ConfigError, OutputError
from .lock import RunLock, lock_path_for
from .summary import RunStatus, RunSummary

__all__ = [
    "ADAPTER_FILE",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "LEGACY_ADAPTER_FILES",
    "METRICS_FILE",
    "POINT_FILE",
    "PREDICTIONS_FILE",
    "RANK_CURVE_FILE",
    "RUN_FILES",
    "SKIPPED_FILE",
    "SUMMARY_FILE",
    "TENSORBOARD_DIR",
    "FolderLockedError",
    "FolderState",
    "adapter_file_path",
    "begin_attempt",
    "check_target",
    "checkpoint_progress",
    "discard_attempt",
    "is_run_folder",
    "lock_folder",
    "read_config_file",
    "read_jsonl",
    "read_metrics",
    "read_state",
    "record_failure",
    "record_tuning",
    "staging_dir",
    "step_losses",
    "swap_in",
    "write_point",
    "write_summary",
]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ADAPTER_FILE = "adaptertune_weights.safetensors"
LEGACY_ADAPTER_FILES = ("adapter.safetensors",)  # earlier name of ADAPTER_FILE; read, never written
CHECKPOINT_FILE = "checkpoint.safetensors"
POINT_FILE = "point.json"
SKIPPED_FILE = "skipped.txt"  # the images the run could not read (runs/skipped.py)
PREDICTIONS_FILE = "predictions.npz"  # the selected model's per-image test outputs (runs/predictions.py)
TENSORBOARD_DIR = "tensorboard"
RANK_CURVE_FILE = "rank_curve.csv"  # a nested run's accuracy at every rank of its grid (runs/rank_curve.py)
RUN_FILES = (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    ADAPTER_FILE,
    *LEGACY_ADAPTER_FILES,
    CHECKPOINT_FILE,
    POINT_FILE,
    SKIPPED_FILE,
    PREDICTIONS_FILE,
    TENSORBOARD_DIR,
    RANK_CURVE_FILE,
)
_logger = logging.getLogger(__name__)
_MARKERS = (SUMMARY_FILE, CONFIG_FILE, METRICS_FILE, POINT_FILE)  # any one makes a folder a run folder


class FolderLockedError(ConfigError):
    """Another process is writing this run folder."""


@dataclass
class FolderState:
    """What a run folder holds now (:func:`read_state`)."""

    status: RunStatus
    detail: str = ""  # the error of a failed run, or what is wrong with the folder
    summary: RunSummary | None = None
    config: dict[str, Any] | None = None  # config.yaml as written
    checkpoint: tuple[int, int] | None = None  # (epoch, step) of the resume checkpoint
    owner: dict[str, Any] | None = None  # the lock holder (pid, host) of a running folder

    @property
    def resumable(self) -> bool:
        """An unfinished run that ``train --resume`` continues (from its checkpoint, or from the start)."""
        unfinished = (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.INCOMPLETE)
        return self.status in unfinished and self.config is not None

    def describe(self) -> str:
        """One line for people: ``resumable (epoch 2, step 6); NonFiniteLossError: ...``."""
        parts = []
        if self.status is RunStatus.RUNNING and self.owner:
            parts.append(f"pid {self.owner.get('pid', '?')} on {self.owner.get('host', '?')}")
        if self.resumable:
            parts.append(
                f"resumable (epoch {self.checkpoint[0]}, step {self.checkpoint[1]})" if self.checkpoint else ""
            )
        if self.detail:
            parts.append(self.detail)
        return "; ".join(p for p in parts if p)


def is_run_folder(names: list[str] | set[str]) -> bool:
    """Whether a folder holding ``names`` is a run folder (it has one of the run's files)."""
    return any(m in names for m in _MARKERS)


def adapter_file_path(run_dir: str | Path) -> Path:
    """The run's adapter file: ``ADAPTER_FILE``, else a file under a legacy name, else where ``ADAPTER_FILE`` goes."""
    run_dir = Path(run_dir)
    for name in (ADAPTER_FILE, *LEGACY_ADAPTER_FILES):
        if (run_dir / name).is_file():
            return run_dir / name
    return run_dir / ADAPTER_FILE


def checkpoint_progress(path: Path) -> tuple[int, int] | None:
    """(epoch, step) of a training checkpoint, from its header alone; None when it is unreadable.

    The epoch is the one the checkpoint was written in (for an end-of-epoch checkpoint, the epoch it closed).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {}).get("adaptertune", "{}"))["state"]
        done, batch, step = int(state["epochs_done"]), int(state["batch_in_epoch"]), int(state["step"])
    except Exception:  # truncated, foreign or older file: not resumable from it
        return None
    return (done + 1 if batch else done), step


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    d = yaml.safe_load(path.read_text())
    if not isinstance(d, dict):
        raise ValueError(f"{CONFIG_FILE} is not a mapping")
    return d


def read_state(run_dir: str | Path, check_lock: bool = True) -> FolderState:
    """The state of a run folder, from its files (and its lock, unless ``check_lock`` is False).

    Pass ``check_lock=False`` while holding the folder's lock yourself (it would read as running).
    """
    run_dir = Path(run_dir)
    if check_lock:
        lock = RunLock(lock_path_for(run_dir))
        if lock.held_elsewhere():
            return FolderState(RunStatus.RUNNING, owner=lock.owner())
    if not run_dir.exists():
        return FolderState(RunStatus.PENDING)
    if not run_dir.is_dir():
        return FolderState(RunStatus.CORRUPT, f"'{run_dir}' is a file, not a run folder")
    try:
        config = _read_config(run_dir)
    except (OSError, ValueError, yaml.YAMLError) as e:
        return FolderState(RunStatus.CORRUPT, f"unreadable {CONFIG_FILE}: {str(e).splitlines()[0]}")
    ckpt = run_dir / CHECKPOINT_FILE
    progress = checkpoint_progress(ckpt) if ckpt.is_file() else None
    if not (run_dir / SUMMARY_FILE).is_file():
        return FolderState(RunStatus.INCOMPLETE, "no summary.json", config=config, checkpoint=progress)
    try:
        d = json.loads((run_dir / SUMMARY_FILE).read_text())
        if not isinstance(d, dict):
            raise ValueError("not a mapping")
        summary = RunSummary.from_dict(d)
    except (OSError, ValueError, TypeError) as e:
        return FolderState(RunStatus.CORRUPT, f"unreadable {SUMMARY_FILE}: {str(e).splitlines()[0]}", config=config)
    if summary.status is RunStatus.SUCCESS:
        if missing := summary.missing_results():
            return FolderState(RunStatus.CORRUPT, f"{SUMMARY_FILE} lacks {', '.join(missing)}", summary, config)
        return FolderState(RunStatus.SUCCESS, summary=summary, config=config)
    if summary.status not in (RunStatus.FAILED, RunStatus.INTERRUPTED):
        return FolderState(RunStatus.CORRUPT, f"{SUMMARY_FILE} has status {summary.status.value!r}", summary, config)
    return FolderState(summary.status, summary.error or "", summary, config, progress)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn (unterminated, unparsable) last line is dropped."""
    p = Path(path)
    if not p.is_file():
        return []
    lines = p.read_text().split("\n")
    out = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:  # the last line, not newline-terminated: an interrupted append
                break
            raise CheckpointError(f"'{path}' line {k + 1} is not valid JSON.") from None
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` (a torn last line is dropped)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def step_losses(metrics: list[dict[str, Any]]) -> list[float]:
    """The training loss of every step, in order, from the epoch records of ``metrics.jsonl``.

    An epoch's ``step_loss`` list (rank 0's batch losses) is used as it is. Where it is shorter than the epoch
    (resumed from a mid-epoch checkpoint: it lists the steps after it), the missing first steps stand in with
    their mean, recovered from the epoch's ``train_loss`` (exact for equal batches). An epoch without the list
    (written before it was recorded) stands in with its ``train_loss`` once per step. So the mean over the
    list is the mean over all steps.
    """
    out: list[float] = []
    prev_step = 0
    for m in metrics:
        step = int(m.get("step", prev_step + 1))
        n = max(step - prev_step, 1)
        known = [float(x) for x in m.get("step_loss") or []]
        if "train_loss" in m and len(known) < n:
            missing = n - len(known)
            out += [(float(m["train_loss"]) * n - math.fsum(known)) / missing] * missing
        out += known
        prev_step = step
    return out


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2))


def record_tuning(run_dir: Path, tuning: dict[str, Any]) -> None:
    """Record in a finished run's ``summary.json`` how its hyper-parameters were selected on validation.

    Raises:
        CheckpointError: the folder holds no finished run.
    """
    state = read_state(run_dir, check_lock=False)
    if state.status is not RunStatus.SUCCESS or state.summary is None:
        raise CheckpointError(f"Cannot record tuning in '{run_dir}': it holds no finished run ({state.status.value}).")
    if state.summary.tuning != tuning:
        state.summary.tuning = tuning
        write_summary(Path(run_dir), state.summary)


def write_point(run_dir: Path, name: str, values: dict[str, Any]) -> None:
    """Record which sweep point a folder is (``point.json``)."""
    atomic_write_text(run_dir / POINT_FILE, json.dumps({"name": name, "values": values}, indent=2))


def record_failure(run_dir: Path, summary: RunSummary, keep_existing: bool = False) -> None:
    """Write the summary of a run that stopped (or of a sweep point that could not start).

    With ``keep_existing`` a failed or interrupted summary already there (the run's own, richer one) is
    kept. A write that fails (e.g. a full disk) is logged, never raised over the error being recorded.
    """
    if keep_existing:
        state = read_state(run_dir, check_lock=False)
        if state.status in (RunStatus.FAILED, RunStatus.INTERRUPTED) and state.detail:
            return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_summary(run_dir, summary)
    except (OutputError, OSError) as e:
        _logger.warning("could not record the failure in %s: %s", run_dir, e)


def begin_attempt(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
    """Make ``run_dir`` ready for an attempt: a new run gets an empty folder (whatever an abandoned attempt
    left there is removed) holding its ``config.yaml``; a resumed run loses the stopped attempt's summary."""
    if resume:
        (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
        return
    try:
        if run_dir.is_dir() and any(run_dir.iterdir()):
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"Cannot create output folder '{run_dir}': {e.strerror or e}.") from None
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def discard_attempt(run_dir: Path) -> None:
    """Delete an unfinished attempt's folder (every entry must be a run file: nothing else is ours to delete).

    Raises:
        ConfigError: the folder holds files that are not a run's.
    """
    if not run_dir.is_dir():
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
    if foreign:
        raise ConfigError(f"Run folder '{run_dir}' holds files that are not a run's ({', '.join(foreign[:3])}).")
    shutil.rmtree(run_dir)


def lock_folder(out_dir: Path) -> RunLock:
    """Take the lock of run folder ``out_dir`` (created beside it).

    Raises:
        FolderLockedError: another process holds it.
        ConfigError: the lock cannot be created there (e.g. a parent is a file).
    """
    lock = RunLock(lock_path_for(out_dir))
    try:
        taken = lock.acquire()
    except OSError as e:
        raise ConfigError(f"Cannot create output folder '{out_dir}': {e.strerror or e}.") from None
    if not taken:
        owner = lock.owner() or {}
        raise FolderLockedError(
            f"Run folder '{out_dir}' is being written by another process (pid {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')}); wait for it to finish or pick another --out-dir."
        )
    _finish_interrupted_swap(out_dir)
    return lock


def _finish_interrupted_swap(out_dir: Path) -> None:
    """A process killed between the two renames of :func:`swap_in` left no ``out_dir``: finish or undo it."""
    staged, old = staging_dir(out_dir), _replaced_dir(out_dir)
    if out_dir.exists() or not old.exists():
        return
    done = staged.is_dir() and read_state(staged, check_lock=False).status is RunStatus.SUCCESS
    os.rename(staged if done else old, out_dir)
    shutil.rmtree(old if done else staged, ignore_errors=True)


def check_target(out_dir: Path, overwrite: bool) -> None:
    """A new run may write ``out_dir``: missing or empty, or (with ``overwrite``) a run folder.

    Raises:
        ConfigError: it is a file, a non-empty folder without ``overwrite``, or not a run folder.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"Output path '{out_dir}' exists and is not a folder; pick another --out-dir.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"Output folder '{out_dir}' is not empty; pick another --out-dir or pass --overwrite.")
        if not (out_dir / CONFIG_FILE).is_file():
            raise ConfigError(f"Output folder '{out_dir}' is not a run folder; --overwrite only replaces runs.")


def staging_dir(out_dir: Path) -> Path:
    """Where ``--overwrite`` trains the replacement of the run in ``out_dir`` (hidden, beside it)."""
    return out_dir.parent / f".{out_dir.name}.overwrite"


def _replaced_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.replaced"


def swap_in(staged: Path, out_dir: Path) -> None:
    """Replace the run in ``out_dir`` by the finished run in ``staged`` (two renames, then delete the old one).

    Raises:
        OutputError: a rename failed; the earlier run is back in ``out_dir``.
    """
    old = _replaced_dir(out_dir)
    try:
        if old.exists():
            shutil.rmtree(old)
        os.rename(out_dir, old)
    except OSError as e:
        raise OutputError(f"Cannot replace '{out_dir}': {e.strerror}; the earlier run is intact.") from None
    try:
        os.rename(staged, out_dir)
    except OSError as e:
        os.rename(old, out_dir)
        raise OutputError(f"Cannot replace '{out_dir}': {e.strerror}; the earlier run is intact.") from None
    shutil.rmtree(old, ignore_errors=True)


def read_config_file(run_dir: Path, purpose: str) -> dict[str, Any]:
    """``config.yaml`` of ``run_dir`` as a dict.

    Raises:
        CheckpointError: there is none (not a run folder) or it is unreadable; the message starts with ``purpose``.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{purpose} '{run_dir}': it is not a run folder (no {CONFIG_FILE}).")
    try:
        d = _read_config(run_dir)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise CheckpointError(f"{purpose} '{run_dir}': its {CONFIG_FILE} is corrupt ({e}).") from None
    return d
