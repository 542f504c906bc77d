"""The run folder's ``predictions.npz``: the selected model's outputs on every test image, for paired statistics.

Every tested run (not a tuning run) writes it in one process; under torchrun each rank evaluates a shard, so
it is not written and ``summary.json`` says ``predictions: null``. Its arrays, row ``k`` for one test image:

- ``index`` (int64): the image's position in the run's test split view (0..N-1; the same image at the same
  position in every run with the same data config and test subset); rows are in increasing ``index``, and an
  image the run could not read (``skipped.txt``) has no row;
- ``label`` (int64): its class;
- ``pred`` (int64): the top-1 class of the fp32 logits (the one ``test_acc`` counts, ties included);
- ``prob`` (float16, N x C): the softmax of the fp32 logits.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_stream
from ..data.base import SplitView, Unreadable
from ..engine.loop import EvalOutputs
from ..errors import CheckpointError
from .folder import PREDICTIONS_FILE

__all__ = ["Predictions", "predictions_of", "read_predictions", "write_predictions"]

_INTS = ("index", "label", "pred")


@dataclass(frozen=True)
class Predictions:
    """The arrays of ``predictions.npz`` (see the module doc)."""

    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    prob: np.ndarray

    @property
    def acc(self) -> float:
        """Top-1 accuracy (%) of ``pred``: the run's ``test_acc``."""
        return 100.0 * float(np.mean(self.pred == self.label)) if len(self.label) else float("nan")


def predictions_of(outputs: EvalOutputs, view: SplitView, unreadable: Iterable[Unreadable] = ()) -> Predictions:
    """``outputs`` of an evaluation pass over ``view`` in its order, with each row's position in ``view``.

    ``unreadable``: the images of ``view`` the pass skipped (they have no row).

    Raises:
        RuntimeError: the rows are not ``view``'s images in order (their count or labels differ).
    """
    gone = {u.path for u in unreadable}
    if gone:
        index = np.array([j for j, i in enumerate(view.indices) if view.source.describe(int(i)) not in gone])
    else:
        index = np.arange(len(view))
    index = index.astype(np.int64)
    targets = np.asarray(view.targets, dtype=np.int64)
    if len(index) != len(outputs.label) or not np.array_equal(targets[index], outputs.label):
        raise RuntimeError(
            f"the test outputs ({len(outputs.label)} rows) are not the {len(index)} readable images of the test "
            "split in its order; predictions.npz would pair the wrong images"
        )
    return Predictions(index, outputs.label, outputs.pred, outputs.prob)


def write_predictions(run_dir: str | Path, predictions: Predictions) -> Path:
    """Write ``run_dir/predictions.npz`` atomically; returns its path.

    Raises:
        OutputError: the file cannot be written.
    """
    path = Path(run_dir) / PREDICTIONS_FILE
    arrays = {k: np.asarray(getattr(predictions, k), dtype=np.int64) for k in _INTS}
    arrays["prob"] = np.asarray(predictions.prob, dtype=np.float16)
    atomic_write_stream(path, lambda f: np.savez_compressed(f, **arrays))
    return path


def read_predictions(run_dir: str | Path) -> Predictions:
    """The arrays of ``run_dir/predictions.npz``.

    Raises:
        CheckpointError: the file is missing (a tuning run, a torchrun run, or a run from before the file), or
            it is not a predictions file with consistent arrays.
    """
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise CheckpointError(f"'{run_dir}' has no {PREDICTIONS_FILE} (tuning and torchrun runs write none).")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"'{path}' is corrupt: {why}.") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise CheckpointError(f"'{path}' is corrupt: it is not an .npz archive.")
    with f:
        if missing := [k for k in (*_INTS, "prob") if k not in f.files]:
            raise CheckpointError(f"'{path}' is corrupt: it lacks the array {missing[0]!r}.")
        try:
            arrays = {k: f[k] for k in (*_INTS, "prob")}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"'{path}' is corrupt: {why}.") from None
    n = len(arrays["index"])
    bad = [k for k in _INTS if arrays[k].dtype != np.int64 or arrays[k].shape != (n,)]
    prob = arrays["prob"]
    bad += [] if prob.dtype == np.float16 and prob.ndim == 2 and len(prob) == n else ["prob"]
    if bad:
        raise CheckpointError(f"'{path}' is corrupt: array {bad[0]!r} has the wrong type or length ({n} images).")
    return Predictions(**arrays)
