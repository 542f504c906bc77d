"""The optional extras: which extra provides which module, and :func:`require`, the one way to import one.

An extra's module is imported only inside the function that needs it, through :func:`require`, so a missing
extra is always the same one-line :class:`~adaptertune.errors.MissingExtraError` naming what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["EXTRAS", "require"]

# top-level module -> the extra of pyproject.toml's [project.optional-dependencies] that installs it (the pip
# package has the module's name)
EXTRAS: dict[str, str] = {
    "datasets": "hf",
    "matplotlib": "report",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "optuna": "tune",
    "peft": "peft",
    "ray": "ray",
    "scipy": "report",
    "tensorboard": "tensorboard",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (``"scipy.io"``) of an optional extra for ``feature`` (``"Method 'lora'"``).

    Raises:
        MissingExtraError: it cannot be imported; the message says which extra to install, e.g.
            ``Method 'lora' needs peft: pip install 'adaptertune[peft]'``.
    """
    package = module.partition(".")[0]
    extra = EXTRAS[package]
    try:
        return importlib.import_module(module)
    except ImportError:
        alone = "" if extra == package else f" (or pip install {package})"
        raise MissingExtraError(
            f"{feature} needs {package}: pip install 'adaptertune[{extra}]'{alone}.", extra, package
        ) from None
