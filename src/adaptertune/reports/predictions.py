"""A run's per-image test predictions (``predictions.npz``), as the report reads them, and their alignment.

A tested run writes, for its selected model on the test split: ``index`` (int64, the image's position in the
run's test split view, the same order in every run with the same data config), ``label`` (int64), ``pred``
(int64, top-1) and ``prob`` (float16, N x C softmax). Runs under torchrun write none.

The reader here is the report's own until the run folder's owner (``runs/``) reads the file; then this
module keeps only :func:`aligned`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

__all__ = ["PREDICTIONS_FILE", "Predictions", "aligned", "predictions_path", "read_predictions"]

PREDICTIONS_FILE = "predictions.npz"
_ARRAYS = ("index", "label", "pred", "prob")


@dataclass(frozen=True)
class Predictions:
    index: np.ndarray  # (N,) int64: position in the test split view
    label: np.ndarray  # (N,) int64
    pred: np.ndarray  # (N,) int64: top-1
    prob: np.ndarray  # (N, C) float16 softmax

    @property
    def correct(self) -> np.ndarray:
        """(N,) 0/1 float: whether the top-1 prediction is the label."""
        return (self.pred == self.label).astype(np.float64)


def predictions_path(run_dir: Path) -> Path | None:
    """The run's predictions file, None when it wrote none."""
    path = Path(run_dir) / PREDICTIONS_FILE
    return path if path.is_file() else None


def read_predictions(path: Path) -> Predictions:
    """The arrays of a predictions file (read once per file version; the arrays are read-only).

    Raises:
        CheckpointError: the file is not a readable predictions file (an array missing or mis-shaped).
    """
    try:
        st = Path(path).stat()
    except OSError as e:
        raise CheckpointError(f"Cannot read predictions file '{path}': {e}") from e
    return _read(Path(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=512)
def _read(path: Path, mtime_ns: int, size: int) -> Predictions:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _ARRAYS if k not in f.files]
            if missing:
                raise CheckpointError(
                    f"Predictions file '{path}' lacks {', '.join(missing)}; expected arrays {', '.join(_ARRAYS)}."
                )
            arrays = {k: np.asarray(f[k]) for k in _ARRAYS}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Cannot read predictions file '{path}': {e}") from e
    n = len(arrays["index"])
    if any(len(arrays[k]) != n for k in _ARRAYS) or arrays["prob"].ndim != 2:
        shapes = ", ".join(f"{k} {arrays[k].shape}" for k in _ARRAYS)
        raise CheckpointError(f"Predictions file '{path}' has mismatched arrays ({shapes}); expected N rows each.")
    for a in arrays.values():
        a.setflags(write=False)
    return Predictions(**arrays)


def aligned(preds: Sequence[Predictions]) -> list[Predictions]:
    """The predictions restricted to the images every one of them has, in ``index`` order (row i is the same
    test image in each).

    Raises:
        CheckpointError: two runs give one image different labels (they were not tested on the same split).
    """
    common = functools.reduce(np.intersect1d, [p.index for p in preds])
    out = []
    for p in preds:
        rows = np.searchsorted(p.index, common, sorter=np.argsort(p.index, kind="stable"))
        rows = np.argsort(p.index, kind="stable")[rows]
        out.append(Predictions(p.index[rows], p.label[rows], p.pred[rows], p.prob[rows]))
    for p in out[1:]:
        if not np.array_equal(p.label, out[0].label):
            bad = int(p.index[np.argmax(p.label != out[0].label)])
            raise CheckpointError(
                f"Test image {bad} has label {int(out[0].label[p.index == bad][0])} in one run and "
                f"{int(p.label[p.index == bad][0])} in another; predictions can only be compared on the same split."
            )
    return out
