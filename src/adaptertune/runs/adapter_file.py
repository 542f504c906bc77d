"""Adapter files: ``adaptertune_weights.safetensors`` holds only the trained tensors plus metadata saying what
they fit.

The metadata (JSON under the safetensors key ``adaptertune``) records the backbone name and kwargs, the weight
tag, the SHA-256 of the backbone weights and where they came from, the method, its options (``options``;
``adapter`` in files written before per-method options sections), the adapted blocks, the width, the class
names, the data config and the task (``task``: the protocol's dataset, data folder, split and image counts).
Loading a file onto a model that differs in any of the identity fields is a :class:`CheckpointError` naming
both sides (:func:`check_adapter_file`), and so is a file of another task than its run folder's
(:func:`check_task`, :func:`check_run_file`). :func:`file_metadata` produces that metadata and these check it:
nowhere else.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import check_output_file
from ..config_keys import options_section
from ..engine import load_tensors, save_tensors
from ..errors import CheckpointError
from ..methods import METHODS
from ..methods.adapter import adapted_blocks
from ..vit import backbone_width
from .folder import ADAPTER_FILE, LEGACY_ADAPTER_FILES, SUMMARY_FILE, read_state

__all__ = [
    "IDENTITY_FIELDS",
    "TASK_KEYS",
    "check_adapter_file",
    "check_run_file",
    "check_task",
    "file_identity",
    "file_metadata",
    "file_options",
    "read_adapter_file",
    "truncate_adapter_file",
]

_logger = logging.getLogger(__name__)

# field -> how the error names it
IDENTITY_FIELDS = {
    "backbone": "backbone",
    "backbone_args": "backbone arguments",
    "weights_sha256": "backbone weights (sha256)",
    "method": "method",
    "options": "method options",  # compared option by option: the method's identity (Method.identity)
    "width": "backbone width",
}

# The protocol's data identity (runs/summary.py make_protocol) an adapter file records as its ``task``; the
# class names are the file's own ``classes``. ``data_split`` is in a protocol only when set.
TASK_KEYS = ("dataset", "data_root", "data_split", "image_counts")
_TASK_LABELS = {"data_split": "data split", "image_counts": "image counts"}
_FIX = (
    "put the run's own adapter file back, or copy this file out of the run folder and serve it alone with "
    "`predict --adapters FILE IMAGE...`"
)


def file_metadata(
    cfg: Any, built: Any, classes: list[str], model: nn.Module, protocol: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The metadata of the adapter file of ``model``, built by ``cfg`` on backbone ``built``.

    Args:
        cfg: the resolved :class:`~adaptertune.config.RunConfig`.
        built: the :func:`~adaptertune.backbones.create_backbone` result (weights tag, hash and source, data config).
        protocol: the run's protocol (:func:`~adaptertune.runs.summary.make_protocol`): its :data:`TASK_KEYS`
            are recorded as the file's ``task`` (None: a model's identity alone, as :func:`load_run` compares).
    """
    task = {} if protocol is None else {"task": {k: protocol[k] for k in TASK_KEYS if k in protocol}}
    options = cfg.method_options  # the options object (or the mapping as read from config.yaml)
    return {
        "backbone": cfg.backbone.name,
        "backbone_args": cfg.backbone.args,
        "backbone_config": dataclasses.asdict(cfg.backbone),
        "init_seed": cfg.train.seed,
        "weights_tag": built.weights_tag,
        "weights_sha256": built.weights_sha256,
        "weights_source": built.weights_source,
        "method": cfg.method,
        "options": options if isinstance(options, dict) or options is None else dataclasses.asdict(options),
        "adapted_blocks": adapted_blocks(model) if options else [],
        "width": backbone_width(model),
        "classes": list(classes),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in built.data_config.items()},
        **task,
    }


def file_options(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The method options an adapter file's metadata records: ``options``, or ``adapter`` in files written
    before per-method options sections."""
    return options_section(meta)


def file_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The identity fields of an adapter file's metadata (or of a model, in the same shape).

    ``options`` is the method's own identity (:meth:`~adaptertune.methods.Method.identity`) of the recorded
    options, defaults filled: files that recorded every method's options (``targets`` for ``adapter``) identify
    by their own method's alone, and a file from before an option existed by that option's default.
    """
    method = meta.get("method")
    options = file_options(meta)
    if method in METHODS:
        info = METHODS.get(method)
        options = info.identity(info.resolve(options))
    return {
        "backbone": meta.get("backbone"),
        "backbone_args": meta.get("backbone_args") or {},
        "weights_sha256": meta.get("weights_sha256"),
        "method": method,
        "options": options or {},
        "width": meta.get("width"),
    }


def check_adapter_file(meta: dict[str, Any], expected: dict[str, Any], source: str, fields=None) -> None:
    """Raise CheckpointError at the first identity field where the file's ``meta`` and ``expected`` differ.

    ``expected`` has the metadata's shape (keys of :func:`file_identity`'s input); ``fields`` restricts the
    check (default: every identity field present in ``expected``). Options are compared one by one, the
    error naming the option and both values (``option `vpt.prompts` differs: the file has 10, the model has 50``).
    """
    have, want = file_identity(meta), file_identity(expected)
    for key in fields or IDENTITY_FIELDS:
        if want[key] is None:
            continue
        if key == "options":
            for name in [*want[key], *(k for k in have[key] if k not in want[key])]:
                a, b = have[key].get(name), want[key].get(name)
                if a != b:
                    raise CheckpointError(
                        f"{source} does not fit this model: option `{want['method']}.{name}` differs: the file has "
                        f"{a!r}, the model has {b!r}."
                    )
            continue
        if have[key] != want[key]:
            a, b = have[key], want[key]
            if key == "weights_sha256":
                a, b = (
                    f"{str(a)[:12]} (tag {meta.get('weights_tag')})",
                    f"{str(b)[:12]} (tag {expected.get('weights_tag')})",
                )
            raise CheckpointError(
                f"{source} does not fit this model: {IDENTITY_FIELDS[key]} differs: the file has {a!r}, "
                f"the model has {b!r}."
            )


def read_adapter_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of an adapter file; a file without adaptertune metadata is a CheckpointError."""
    tensors, meta = load_tensors(path)
    missing = [k for k in ("backbone", "weights_sha256", "method", "classes") if k not in meta]
    if missing:
        raise CheckpointError(f"'{path}' is not an adaptertune adapter file: its metadata lacks {', '.join(missing)}.")
    return tensors, meta


def truncate_adapter_file(path: str | Path, rank: int, out: str | Path) -> Path:
    """Write the rank-``rank`` sub-model of a nested run's adapter file ``path`` to ``out`` as a plain adapter file:
    its method's truncated tensors (:meth:`~adaptertune.methods.Method.truncate`), and options that say rank
    ``rank``, not nested; the rest of the metadata (backbone, weights, task, classes) as it was. A model built
    with those options and this file computes what the nested model computes at active rank ``rank``.

    Raises:
        CheckpointError: ``path`` is not an adapter file.
        ConfigError: its method or options are not nested, or ``rank`` is not in 1..its rank.
    """
    out = check_output_file(Path(out))
    tensors, meta = read_adapter_file(path)
    method = METHODS.get(meta["method"])
    small, options = method.truncate(tensors, method.resolve(file_options(meta)), rank)
    meta = {k: v for k, v in meta.items() if k != "adapter"} | {"options": dataclasses.asdict(options)}
    save_tensors(out, small, meta)
    return out


def _file_task(meta: dict[str, Any]) -> dict[str, Any]:
    if "task" not in meta:  # written before files recorded their task: the class names alone
        return {"classes": meta.get("classes")}
    return {"data_split": None, **meta["task"], "classes": meta.get("classes")}


def _run_task(summary: dict[str, Any]) -> dict[str, Any]:
    protocol = summary.get("protocol") or {}
    task = {k: protocol[k] for k in (*TASK_KEYS, "classes") if k in protocol}
    if "dataset" in task:
        task.setdefault("data_split", None)
    for key in ("dataset", "classes"):  # a summary without a protocol still names them
        if key not in task and summary.get(key):
            task[key] = summary[key]
    return task


def _describe(task: dict[str, Any]) -> str:
    """``imagefolder at '/data/x' (2 classes: even, odd)``; more than six classes as ``0, 1, 2, ..., 9``."""
    where = f"{task['dataset']}" if task.get("dataset") else "an unrecorded dataset"
    if task.get("data_root"):
        where += f" at '{task['data_root']}'"
    classes = [str(c) for c in task.get("classes") or []]
    if not classes:
        return where
    names = ", ".join(classes if len(classes) <= 6 else [*classes[:3], "...", classes[-1]])
    return f"{where} ({len(classes)} classes: {names})"


def _value(key: str, v: Any) -> str:
    if key == "image_counts" and isinstance(v, dict):
        return ", ".join(f"{split} {n}" for split, n in v.items())
    return "none" if v is None else repr(v)


def check_task(meta: dict[str, Any], summary: dict[str, Any], source: str, run_dir: str) -> None:
    """Raise CheckpointError when adapter file ``meta`` was trained on another task than the run folder's
    ``summary`` (``summary.json`` as a dict) records: dataset, data folder, split, class names, image counts.

    Only what both sides record is compared: a file written before files recorded their task is checked on
    its class names (with a warning), a summary without a protocol on its dataset and class names.
    """
    have, want = _file_task(meta), _run_task(summary)
    if "task" not in meta and len(want) > 1:
        _logger.warning(
            "%s records no dataset, folder or image counts (written before adapter files did): only its class "
            "names are checked against run folder '%s'",
            source,
            run_dir,
        )
    for key in ("dataset", "data_root", "classes", "data_split", "image_counts"):
        if key in have and key in want and have[key] != want[key]:
            detail = ""
            if key in _TASK_LABELS:  # not part of the description: say what differs
                detail = f" ({_TASK_LABELS[key]} {_value(key, have[key])} vs {_value(key, want[key])})"
            raise CheckpointError(
                f"{source} was trained on {_describe(have)} but run folder '{run_dir}' is {_describe(want)}"
                f"{detail}; {_FIX}."
            )


def check_run_file(path: str | Path, meta: dict[str, Any]) -> None:
    """:func:`check_task` for an adapter file that sits in a run folder (under the run's file name, beside its
    ``summary.json``); a file anywhere else is a bare file, which serves its own classes."""
    path = Path(path)
    run_dir = path.parent
    if path.name not in (ADAPTER_FILE, *LEGACY_ADAPTER_FILES) or not (run_dir / SUMMARY_FILE).is_file():
        return
    state = read_state(run_dir, check_lock=False)
    if state.summary is None:
        raise CheckpointError(
            f"{path} sits in run folder '{run_dir}' whose {SUMMARY_FILE} is unreadable ({state.detail}), so its "
            "task cannot be checked; copy the file out of the folder to serve it alone."
        )
    check_task(meta, state.summary.to_dict(), path.name, str(run_dir))
