"""Resuming a run folder: is it resumable with this config, and which config it was started with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig
from .errors import CheckpointError, ConfigError

__all__ = ["check_resumable", "resume_config"]

# may differ between an interrupted run and its resumption (they do not change the numbers; precision does)
_RESUME_FREE_KEYS = {("data", "num_workers"), ("train", "device"), ("out_dir",)}


def check_resumable(out_dir: Path, cfg: RunConfig) -> None:
    """``out_dir`` holds an unfinished run with the same config (up to _RESUME_FREE_KEYS)."""
    if not (out_dir / "config.yaml").is_file():
        raise CheckpointError(f"Cannot resume '{out_dir}': it is not a run folder (no config.yaml).")
    summary = out_dir / "summary.json"
    if summary.is_file():
        try:
            status = json.loads(summary.read_text()).get("status")
        except json.JSONDecodeError:
            status = None
        if status == "success":
            raise ConfigError(f"Run '{out_dir}' already finished; nothing to resume (train into a new --out-dir).")
    try:
        saved = RunConfig.from_dict(yaml.safe_load((out_dir / "config.yaml").read_text())).to_dict()
    except (yaml.YAMLError, ConfigError) as e:
        raise CheckpointError(f"Cannot resume '{out_dir}': its config.yaml is corrupt ({e}).") from None
    diff = _first_difference(saved, cfg.to_dict())
    if diff is not None:
        key, a, b = diff
        raise ConfigError(f"Cannot resume '{out_dir}': `{key}` is {b!r} here but {a!r} in the run; resume unchanged.")


def _first_difference(a: dict, b: dict, path: tuple = ()) -> tuple[str, Any, Any] | None:
    for k in sorted(set(a) | set(b)):
        p = (*path, k)
        if p in _RESUME_FREE_KEYS:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and path != ("backbone",):
            if (d := _first_difference(va, vb, p)) is not None:
                return d
        elif va != vb:
            return ".".join(p), va, vb
    return None


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The config of the run in ``run_dir``; ``overrides`` (nested dict) may only change what does not
    change the numbers (data.num_workers, train.device)."""
    from .config import merge_dicts

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"Cannot resume '{run_dir}': it is not a run folder (no config.yaml).")
    try:
        d = yaml.safe_load((run_dir / "config.yaml").read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"Cannot resume '{run_dir}': its config.yaml is corrupt ({e}).") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"Cannot resume '{run_dir}': its config.yaml is not a mapping.")
    d = merge_dicts(d, overrides or {})
    d["out_dir"] = str(run_dir)
    return RunConfig.from_dict(d)
