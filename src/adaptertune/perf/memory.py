"""Peak training memory of one method, measured in a fresh process.

On CPU the figure is the process's peak resident set (``VmHWM``) minus its resident set just before the
backbone is built, so it covers weights, activations saved for backward, gradients and optimizer state,
like ``torch.cuda.max_memory_allocated`` does on CUDA. A fresh process per method is needed on CPU: memory
freed by an earlier method stays resident in the allocator of the same process and would hide the next
method's peak. On CUDA the child reads ``max_memory_allocated``.

Run as ``python -m adaptertune.perf.memory SPEC.json OUT.json`` (used by :func:`measure_peak_memory`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import AdapterTuneError

__all__ = ["measure_peak_memory", "rss_mb"]

_logger = logging.getLogger(__name__)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AdapterTuneError(f"/proc/self/status has no {field}; peak RSS can only be read on Linux.")


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process in MiB."""
    return _status_kb("VmRSS") / 1024, _status_kb("VmHWM") / 1024


def _reset_peak_rss() -> None:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as e:  # then VmHWM still bounds the run; only the import-time peak is mixed in
        _logger.debug("cannot reset peak RSS: %s", e)


def measure_peak_memory(spec: dict[str, Any], timeout: float = 600.0) -> float:
    """Peak memory (MiB) of ``spec['steps']`` training steps of one method, in a child process.

    ``spec`` holds the keys of :func:`_child` (backbone, method, batch size, device, ...).
    """
    with tempfile.TemporaryDirectory(prefix="adaptertune-mem-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.run(
            [sys.executable, "-m", "adaptertune.perf.memory", str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if proc.returncode != 0 or not out_path.exists():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise AdapterTuneError(f"Memory probe for method '{spec['method']}' failed: {tail[0][:300]}")
        return float(json.loads(out_path.read_text())["peak_memory_mb"])


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from ..backbones import create_backbone
    from ..config import BackboneConfig
    from .step import build_for_speed, make_batch, make_train_step

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    if spec.get("tune_malloc") and not cuda:
        from .cpu import tune_malloc

        tune_malloc()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = rss_mb()[0]
        _reset_peak_rss()
    cfg = BackboneConfig(name=spec["backbone"], pretrained=False, args=spec["backbone_args"])
    model = create_backbone(cfg, spec["num_classes"], seed=0).model
    model = build_for_speed(spec["method"], model, spec.get("options"))
    model.to(device).train()
    x, y = make_batch(model, spec["batch_size"], spec["num_classes"], device)
    step = make_train_step(model, x, y, spec["precision"], device)
    for _ in range(int(spec["steps"])):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = rss_mb()[1] - base
    return {"method": spec["method"], "peak_memory_mb": peak}


if __name__ == "__main__":
    spec_file, out_file = sys.argv[1], sys.argv[2]
    result = _child(json.loads(Path(spec_file).read_text()))
    atomic_write_text(out_file, json.dumps(result))
