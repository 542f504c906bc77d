"""The runs' per-image test predictions as the report pairs them: read once per file version, aligned by image.

The file, its arrays and its reader belong to the run folder (:mod:`adaptertune.runs.predictions`); a report's
:class:`~.collect.RunRecord` holds the path of a run's ``predictions.npz`` when it wrote one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..runs.folder import PREDICTIONS_FILE
from ..runs.predictions import Predictions, read_predictions

__all__ = ["aligned", "correct", "load"]


def load(path: Path) -> Predictions:
    """The predictions file ``path`` (a run folder's ``predictions.npz``), read by the run folder's reader once
    per file version: a report pairs every cell with every other, so it asks for each file many times.

    Raises:
        CheckpointError: the file is missing or corrupt (:func:`adaptertune.runs.predictions.read_predictions`).
    """
    path = Path(path)
    if path.name != PREDICTIONS_FILE:
        raise CheckpointError(f"'{path}' is not a run folder's {PREDICTIONS_FILE}.")
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"Cannot read predictions file '{path}': {e.strerror or e}.") from None
    return _load(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=512)
def _load(path: Path, mtime_ns: int, size: int) -> Predictions:
    p = read_predictions(path.parent)
    for a in (p.index, p.label, p.pred, p.prob):
        a.setflags(write=False)  # shared by every caller of the cache
    return p


def correct(p: Predictions) -> np.ndarray:
    """(N,) 0/1 float: whether each image's top-1 prediction is its label."""
    return (p.pred == p.label).astype(np.float64)


def aligned(preds: Sequence[Predictions]) -> list[Predictions]:
    """The predictions restricted to the images every one of them has, in ``index`` order (row i is the same
    test image in each).

    Raises:
        CheckpointError: two runs give one image different labels (they were not tested on the same split).
    """
    common = functools.reduce(np.intersect1d, [p.index for p in preds])
    out = []
    for p in preds:
        order = np.argsort(p.index, kind="stable")
        rows = order[np.searchsorted(p.index, common, sorter=order)]
        out.append(Predictions(p.index[rows], p.label[rows], p.pred[rows], p.prob[rows]))
    for p in out[1:]:
        if not np.array_equal(p.label, out[0].label):
            bad = int(p.index[np.argmax(p.label != out[0].label)])
            raise CheckpointError(
                f"Test image {bad} has label {int(out[0].label[p.index == bad][0])} in one run and "
                f"{int(p.label[p.index == bad][0])} in another; predictions can only be compared on the same split."
            )
    return out
