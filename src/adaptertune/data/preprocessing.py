"""The evaluation preprocessing written out for a deployer: what :mod:`.images` (decoding to RGB) and
:mod:`.transforms` (the eval transform) do to a file, step by step, with the numbers of one run.

An export's sidecar, its timm ``config.json`` and its model card carry :func:`preprocessing_spec`; with it alone
(PIL + numpy, no torchvision or timm) a deployer computes the exported model's input tensor exactly
(``tests/test_predict_output.py`` does so and matches ``adaptertune predict``). Pure: no torch.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["eval_data_config", "preprocessing_spec", "preprocessing_steps"]

# timm's interpolation names -> the PIL resampling filter torchvision applies to a PIL image
_PIL_FILTERS = {
    "nearest": "NEAREST",
    "bilinear": "BILINEAR",
    "bicubic": "BICUBIC",
    "box": "BOX",
    "hamming": "HAMMING",
    "lanczos": "LANCZOS",
}

COLOUR_RULE = (
    "Decode the file with PIL (Image.open, then load(); EXIF orientation is not applied: pixels as stored) and "
    "make it 8-bit RGB. 8-bit modes use PIL's Image.convert('RGB'): grey (L) and 1-bit copy the value into R, G "
    "and B; palette (P) looks each index up in the palette (its transparency is ignored); RGBA, LA and PA drop "
    "alpha without compositing onto any background (a transparent pixel keeps the colour stored under it); CMYK "
    "and YCbCr use PIL's formulas. High-depth grey is scaled by its full range, not clipped: 16-bit (I;16*) and "
    "32-bit integer (I, values 0..65535) become (v + 128) // 257 (= round(v / 257)), float (F, values in [0, 1]) "
    "becomes round(v * 255); the grey value is then copied into R, G and B."
)


def eval_data_config(data_config: dict[str, Any], resize: str = "crop") -> dict[str, Any]:
    """The timm data config (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``)
    whose ``timm.data.create_transform(..., is_training=False)`` is the eval transform of a run with this
    backbone ``data_config`` and ``data.resize`` (``squash``: crop_pct 1.0, crop_mode ``squash``)."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}
    out.setdefault("interpolation", "bicubic")
    if resize == "squash":
        out.update(crop_pct=1.0, crop_mode="squash")
    elif resize == "crop":
        out.update(crop_pct=float(data_config.get("crop_pct", 0.875)), crop_mode="center")
    else:
        raise ValueError(f"resize must be 'crop' or 'squash', got {resize!r}")
    return out


def preprocessing_spec(data_config: dict[str, Any], resize: str = "crop") -> dict[str, Any]:
    """Every step from an image file to the model's input, as JSON-ready data (see the module docstring).

    ``resize``: the run's ``data.resize`` (``crop``: shorter side to ``floor(size / crop_pct)``, centre crop;
    ``squash``: straight to ``size x size``).
    """
    cfg = eval_data_config(data_config, resize)
    height, width = (int(v) for v in cfg["input_size"][-2:])
    interp = cfg["interpolation"]
    if interp not in _PIL_FILTERS:
        raise ValueError(f"interpolation must be one of {', '.join(_PIL_FILTERS)}, got {interp!r}")
    pil = _PIL_FILTERS[interp]
    if resize == "squash":
        resize_step: dict[str, Any] = {
            "mode": "squash",
            "size": [height, width],
            "interpolation": interp,
            "rule": f"PIL Image.resize(({width}, {height}), Image.Resampling.{pil}) (antialiased when shrinking); "
            "the aspect ratio is not kept; an image already that size is used as it is",
        }
        crop_step = None
    else:
        side = int(math.floor(height / cfg["crop_pct"]))
        resize_step = {
            "mode": "shorter_side",
            "size": side,
            "crop_pct": cfg["crop_pct"],
            "interpolation": interp,
            "rule": f"scale so the shorter side is {side} px (= floor({height} / crop_pct)) and the longer side is "
            f"int({side} * long / short) (Python float, truncated), keeping the orientation; PIL "
            f"Image.resize((new_w, new_h), Image.Resampling.{pil}) (antialiased when shrinking); an image "
            "whose shorter side is already that size is used as it is",
        }
        crop_step = {
            "mode": "center",
            "size": [height, width],
            "rule": f"top = round((h - {height}) / 2), left = round((w - {width}) / 2) with Python's round (halves "
            f"to even: 1.5 -> 2, 2.5 -> 2); keep rows top..top+{height}, columns left..left+{width}. Only "
            "when crop_pct > 1 can the image be smaller than the crop: it is first padded with black, "
            "(crop - side) // 2 pixels on the left/top and the rest on the right/bottom",
        }
    return {
        "colour": {"mode": "RGB", "rule": COLOUR_RULE},
        "resize": resize_step,
        "crop": crop_step,
        "to_float": {"rule": "uint8 0..255 -> float32 x / 255, in [0, 1]"},
        "normalize": {
            "mean": [float(m) for m in cfg["mean"]],
            "std": [float(s) for s in cfg["std"]],
            "rule": "(x - mean[c]) / std[c] for the channels c = R, G, B (float32)",
        },
        "layout": {"order": "NCHW", "shape": ["batch", 3, height, width], "channels": "RGB", "dtype": "float32"},
    }


def preprocessing_steps(spec: dict[str, Any]) -> list[str]:
    """:func:`preprocessing_spec` as numbered prose lines (the model card's)."""
    r, c, n, lay = spec["resize"], spec["crop"], spec["normalize"], spec["layout"]
    steps = [
        f"Colour: {spec['colour']['rule']}",
        f"Resize ({r['interpolation']}): {r['rule']}.",
        *([f"Centre crop {c['size'][0]} x {c['size'][1]}: {c['rule']}."] if c else []),
        f"To float: {spec['to_float']['rule']}.",
        f"Normalise: mean {n['mean']}, std {n['std']}: {n['rule']}.",
        f"Layout: {lay['order']} {lay['dtype']}, shape ({', '.join(map(str, lay['shape']))}), channels "
        f"{lay['channels']}.",
    ]
    return [f"{i}. {s}" for i, s in enumerate(steps, 1)]
