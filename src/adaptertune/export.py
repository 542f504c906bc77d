"""Export a finished run as a standalone model: backbone + adapters + head in one file, or as a folder
timm or PEFT opens (``timm``, ``peft``: :mod:`adaptertune.hub_export`, with a model card).

Which formats a method's runs accept is the method's (its registry entry's ``export_formats``).
``pt``: a ``torch.export`` program (``torch.export.load(path).module()(images)``; needs only torch).
``onnx``: an ONNX graph with input ``images`` (B, 3, H, W) and output ``logits`` (B, C), checked with
onnxruntime. A method that can fold its modules into the base weights does so first (its ``merge``: LoRA;
no extra matmuls at inference). Each export is
checked against the training-time model on a batch of inputs; a mismatch above ``atol`` is an error and
leaves no file behind. A JSON sidecar records the class names, the backbone weights and the whole input
preprocessing (``preprocessing``: colour conversion, resize, crop, scaling, normalisation, layout; see
:mod:`adaptertune.data.preprocessing`), enough to feed the model from PIL + numpy alone.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write_bytes, atomic_write_text, check_output_dir, check_output_file
from .data.preprocessing import eval_data_config, preprocessing_spec
from .errors import ConfigError
from .extras import require
from .hub_export import FOLDER_FORMATS, ExportError, export_folder, run_weights
from .methods import METHODS
from .runs import load_run
from .runs.rank_curve import serve_at_rank

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_model", "export_run"]

_logger = logging.getLogger(__name__)
FILE_FORMATS = ("pt", "onnx")
EXPORT_FORMATS = (*FILE_FORMATS, *FOLDER_FORMATS)


@dataclass
class ExportResult:
    path: str
    format: str
    bytes: int
    max_abs_diff: float
    merged: bool  # the method folded its modules into the base weights (LoRA)
    sidecar: str  # pt/onnx: the JSON sidecar; timm/peft: the folder's model card (README.md)


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}'; use one of: {', '.join(EXPORT_FORMATS)}.")


def _run_pt(src: Path | bytes, x: torch.Tensor) -> torch.Tensor:
    return torch.export.load(io.BytesIO(src) if isinstance(src, bytes) else str(src)).module()(x)


def _run_onnx(src: Path | bytes, x: torch.Tensor) -> torch.Tensor:
    ort = require("onnxruntime", "ONNX export")
    sess = ort.InferenceSession(src if isinstance(src, bytes) else str(src), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(["logits"], {"images": x.numpy()})[0])


def export_model(model: nn.Module, path: str | Path, fmt: str, example: torch.Tensor, atol: float = 1e-4) -> float:
    """Write ``model`` (eval mode, CPU) to ``path`` and return the max |logit difference| on ``example``."""
    if fmt not in FILE_FORMATS:
        raise ConfigError(f"Unknown model file format '{fmt}'; use one of: {', '.join(FILE_FORMATS)}.")
    path = Path(path)
    model = model.eval().cpu()
    with torch.no_grad():
        ref = model(example)
    buf = io.BytesIO()  # built in memory: a full disk then fails in Python (one line), not inside torch's C++ writer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter
        if fmt == "pt":
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, buf)
        else:
            torch.onnx.export(
                model,
                (example,),
                buf,
                dynamo=False,  # the TorchScript exporter: no onnxscript dependency
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
            )
    data = buf.getvalue()
    with torch.no_grad():
        got = (_run_pt if fmt == "pt" else _run_onnx)(data, example)
    diff = float((got.float() - ref.float()).abs().max())
    if not diff <= atol:
        raise ExportError(f"The {fmt} export differs from the model: max |logit diff| {diff:.3g} > {atol:g}.")
    atomic_write_bytes(path, data)
    return diff


def export_run(
    run_dir: str | Path,
    fmt: str = "pt",
    out: str | Path | None = None,
    atol: float = 1e-4,
    batch: int = 4,
    rank: int | None = None,
) -> ExportResult:
    """Export a finished run (rebuilt from its backbone + adapter file) as a standalone model or folder.

    The check compares the export's logits with the training-time model's (before any merge) on ``batch``
    seeded random inputs. ``out``: the file (pt, onnx; default ``RUN/model.FORMAT``) or folder (timm, peft;
    default ``RUN/export-FORMAT``). ``rank``: a nested run's model at that rank (1..its rank; the default file
    name gets ``-rR``), checked against the nested model at that rank.

    Raises:
        ConfigError: an unknown format, or one the run's method cannot be written in.
        ExportError: the export does not reproduce the trained model's logits.
    """
    _check_format(fmt)
    at = "" if rank is None else f"-r{rank}"
    if fmt in FOLDER_FORMATS:  # checked before the slow part
        path = check_output_dir(Path(out) if out else Path(run_dir) / f"export-{fmt}{at}")
    else:
        path = check_output_file(Path(out) if out else Path(run_dir) / f"model{at}.{fmt}")
    loaded = load_run(run_dir, device="cpu")
    method = METHODS.get(loaded.config.method)
    serve_at_rank(loaded.model, method, loaded.config.method_options, rank)
    if fmt not in method.export_formats():
        raise ConfigError(
            f"Method '{method.name}' cannot be exported as '{fmt}' (it does not fold into the plain backbone"
            f"{' or have a PEFT form' if fmt == 'peft' else ''}); use one of: {', '.join(method.export_formats())}."
        )
    model = loaded.model.eval()
    size = tuple(loaded.data_config["input_size"])
    example = torch.randn((batch, *size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(example)
    if fmt in FOLDER_FORMATS:
        diff, merged = export_folder(loaded, Path(run_dir), fmt, path, example, ref, atol)
        size_bytes = sum(p.stat().st_size for p in path.iterdir())
        result = ExportResult(str(path), fmt, size_bytes, diff, merged, str(path / "README.md"))
        _logger.info("exported %s", asdict(result))
        return result
    merged = method.merge(model)
    export_model(model, path, fmt, example, atol)
    with torch.no_grad():
        got = (_run_pt if fmt == "pt" else _run_onnx)(path, example)
    diff = float((got.float() - ref.float()).abs().max())  # against the unmerged training-time model
    if not diff <= atol:
        path.unlink(missing_ok=True)
        raise ExportError(f"The {fmt} export differs from the trained model: max |logit diff| {diff:.3g} > {atol:g}.")
    sidecar = path.with_name(path.name + ".json")
    resize = loaded.config.data.resize
    info: dict[str, Any] = {
        "format": fmt,
        "input": "images (B, 3, H, W), float32, RGB, normalized: see preprocessing",
        "classes": loaded.classes,
        "preprocessing": preprocessing_spec(loaded.data_config, resize),  # every step from a file to `images`
        "data_config": eval_data_config(loaded.data_config, resize),  # timm's create_transform of it is the same
        "method": loaded.config.method,
        **({} if rank is None else {"rank": rank}),  # a nested run's model at this rank
        "backbone": loaded.config.backbone.name,
        "weights": run_weights(loaded),  # which backbone weights, by name and hash
        "max_abs_diff": diff,
    }
    atomic_write_text(sidecar, json.dumps(info, indent=2))
    result = ExportResult(str(path), fmt, path.stat().st_size, diff, merged, str(sidecar))
    _logger.info("exported %s", asdict(result))
    return result
