"""Error classes users can catch.

Every error raised on bad user input derives from :class:`AdapterTuneError` and also from the builtin it
replaces, so ``except ValueError`` keeps working.
"""

__all__ = [
    "AdapterTuneError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MissingExtraError",
    "NonFiniteLossError",
    "OutputError",
    "TuningError",
    "UnknownNameError",
    "WeightsUnavailableError",
]


class AdapterTuneError(Exception):
    """Base class of every adaptertune error."""


class ConfigError(AdapterTuneError, ValueError):
    """A configuration value is invalid (names the field, the value and what is accepted)."""


class UnknownNameError(AdapterTuneError, KeyError):
    """A registry lookup failed (unknown backbone, dataset, method or preset)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(AdapterTuneError, RuntimeError):
    """Pretrained weights were asked for but cannot be had. Never falls back to random weights."""


class DataError(AdapterTuneError, ValueError):
    """A dataset is missing, empty or malformed."""


class CheckpointError(AdapterTuneError, ValueError):
    """A checkpoint or adapter file does not match the model or is corrupt."""


class NonFiniteLossError(AdapterTuneError, RuntimeError):
    """The training loss became NaN or infinite."""


class OutputError(AdapterTuneError, OSError):
    """A result file cannot be written (disk full, read-only or missing folder); earlier files stay intact."""


class MissingExtraError(AdapterTuneError, ImportError):
    """An optional extra is not installed; ``extra`` names it (``pip install 'adaptertune[EXTRA]'``) and ``name``
    the module that could not be imported. Raised by :func:`adaptertune.extras.require`."""

    def __init__(self, message: str, extra: str, name: str | None = None) -> None:
        super().__init__(message, name=name)
        self.extra = extra

    def __reduce__(self) -> tuple:  # pickles whole (a sweep point's error crosses processes)
        return type(self), (str(self), self.extra, self.name)


class TuningError(AdapterTuneError, RuntimeError):
    """A hyper-parameter search cannot select: one of its runs failed or has no validation accuracy."""
