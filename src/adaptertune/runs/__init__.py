"""The run folder and everything that reads or writes it.

* :mod:`.summary`: the status vocabulary (:class:`RunStatus`), the ``summary.json`` schema
  (:class:`RunSummary`), the protocol and the config keys that may differ between runs.
* :mod:`.folder`: the folder's files, its state (:func:`read_state`), locking, failures, ``--overwrite``.
* :mod:`.lock`: the OS lock primitive (shared with sweeps).
* :mod:`.adapter_file`: the adapter file's (``ADAPTER_FILE``) metadata, produced and checked.
* :mod:`.train`: :func:`run`, :func:`resume_run`; :mod:`.load`: :func:`load_run`, :func:`evaluate_run`,
  :func:`predict`; :mod:`.callbacks`: metrics and TensorBoard writers.
"""

from .folder import ADAPTER_FILE, CHECKPOINT_FILE, FolderLockedError, FolderState, read_state
from .load import LoadedRun, evaluate_run, load_run, predict
from .summary import CELL_FREE_KEYS, RESUME_FREE_KEYS, RunStatus, RunSummary
from .train import resume_config, resume_run, run

__all__ = [
    "ADAPTER_FILE",
    "CELL_FREE_KEYS",
    "CHECKPOINT_FILE",
    "RESUME_FREE_KEYS",
    "FolderLockedError",
    "FolderState",
    "LoadedRun",
    "RunStatus",
    "RunSummary",
    "evaluate_run",
    "load_run",
    "predict",
    "read_state",
    "resume_config",
    "resume_run",
    "run",
]
