"""VTAB-1k as the PETL literature distributes it, and how its mean is taken.

**Layout.** One task's folder (``--data-root``) holds its images plus four list files whose lines are
``relative/path label`` (paths relative to the task folder, integer labels from 0):

    <task>/train800.txt  train800val200.txt  val200.txt  test.txt  images/...

This is the image-list release of VTAB-1k prepared by NOAH (Zhang, Zhou & Liu 2022,
github.com/ZhangYuanhan-AI/NOAH) and used by most PETL code since (NOAH, SSF, FacT, RepAdapter, ...): for each
task the 800 training and 200 validation examples of VTAB-1k (Zhai et al. 2019, arXiv:1910.04867, drawn from
the TFDS train and validation splits) and the task's full test split.

**Datasets.** ``vtab-1k`` reads one task folder (``--data-root vtab-1k/cifar``); each task is also registered
as ``vtab-<task>`` (``--dataset vtab-cifar --data-root vtab-1k``) so that results tables keep the tasks apart.

**Splits** (``data.split``): ``train800val200`` (default) trains on the 1000 examples and tests on
``test.txt``, as every reported number does; ``train800`` is for hyper-parameter tuning: train on 800, select and
report on ``val200`` (``test.txt`` is not read, so a search never sees the test set).

**Protocol** (preset ``vtab``, ``configs/bench/vtab.yaml``): images resized straight to 224 x 224 (no crop,
``data.resize: squash``), no augmentation, 100 epochs, batch 64, AdamW lr 1e-3, weight decay 1e-4, 10 warm-up
epochs then cosine: NOAH's published schedule, followed by SSF and FacT.

**The 19 tasks** (folder names as NOAH's release spells them; :data:`VTAB_TASKS` holds group, classes, source):

========================  ===========  =======  ===========================================================
task folder               group        classes  source (VTAB task)
========================  ===========  =======  ===========================================================
cifar                     natural      100      CIFAR-100 (Krizhevsky 2009)
caltech101                natural      102      Caltech-101 (Fei-Fei et al. 2004)
dtd                       natural      47       Describable Textures (Cimpoi et al. 2014)
oxford_flowers102         natural      102      Oxford Flowers-102 (Nilsback & Zisserman 2008)
oxford_iiit_pet           natural      37       Oxford-IIIT Pet (Parkhi et al. 2012)
svhn                      natural      10       SVHN cropped digits (Netzer et al. 2011)
sun397                    natural      397      SUN397 scenes (Xiao et al. 2010)
patch_camelyon            specialized  2        PatchCamelyon histopathology (Veeling et al. 2018)
eurosat                   specialized  10       EuroSAT Sentinel-2 RGB (Helber et al. 2019)
resisc45                  specialized  45       NWPU-RESISC45 aerial scenes (Cheng et al. 2017)
diabetic_retinopathy      specialized  5        Kaggle Diabetic Retinopathy, btgraham-300 preprocessing
clevr_count               structured   8        CLEVR (Johnson et al. 2017): count_all (3-10 objects)
clevr_dist                structured   6        CLEVR: closest_object_distance (6 bins)
dmlab                     structured   6        DeepMind Lab (Beattie et al. 2016): distance to reward
kitti                     structured   4        KITTI (Geiger et al. 2012): closest_vehicle_distance
dsprites_loc              structured   16       dSprites (Matthey et al. 2017): x position, 16 bins
dsprites_ori              structured   16       dSprites: orientation, 16 bins
smallnorb_azi             structured   18       smallNORB (LeCun et al. 2004): azimuth
smallnorb_ele             structured   9        smallNORB: elevation
========================  ===========  =======  ===========================================================

**The VTAB mean** (:func:`vtab_mean`): the mean of the three group means (natural, specialized, structured),
:data:`VTAB_MEAN_CONVENTION`. This is the "Mean" / "Avg" column of NOAH, SSF and FacT; VPT reports the three
group means only. The plain mean over 19 tasks weights structured (8 tasks) over specialized (4) and gives a
different number from the same per-task accuracies (``vtab_mean(scores, "tasks")``); a table must say which.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from .base import ImageFiles, RawDataset
from .locate import dataset_dir
from .registry import DatasetInfo, register_dataset

__all__ = [
    "VTAB_DATASET_PREFIX",
    "VTAB_GROUPS",
    "VTAB_LIST_FILES",
    "VTAB_MEAN_CONVENTION",
    "VTAB_SPLITS",
    "VTAB_TASKS",
    "VtabTask",
    "load_vtab_1k",
    "read_image_list",
    "vtab_group_means",
    "vtab_mean",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VtabTask:
    group: str
    num_classes: int
    source: str


VTAB_TASKS: dict[str, VtabTask] = {
    "cifar": VtabTask("natural", 100, "CIFAR-100 (Krizhevsky 2009)"),
    "caltech101": VtabTask("natural", 102, "Caltech-101 (Fei-Fei et al. 2004)"),
    "dtd": VtabTask("natural", 47, "Describable Textures (Cimpoi et al. 2014)"),
    "oxford_flowers102": VtabTask("natural", 102, "Oxford Flowers-102 (Nilsback & Zisserman 2008)"),
    "oxford_iiit_pet": VtabTask("natural", 37, "Oxford-IIIT Pet (Parkhi et al. 2012)"),
    "svhn": VtabTask("natural", 10, "SVHN cropped digits (Netzer et al. 2011)"),
    "sun397": VtabTask("natural", 397, "SUN397 scenes (Xiao et al. 2010)"),
    "patch_camelyon": VtabTask("specialized", 2, "PatchCamelyon histopathology (Veeling et al. 2018)"),
    "eurosat": VtabTask("specialized", 10, "EuroSAT Sentinel-2 RGB (Helber et al. 2019)"),
    "resisc45": VtabTask("specialized", 45, "NWPU-RESISC45 aerial scenes (Cheng et al. 2017)"),
    "diabetic_retinopathy": VtabTask("specialized", 5, "Kaggle Diabetic Retinopathy, btgraham-300 preprocessing"),
    "clevr_count": VtabTask("structured", 8, "CLEVR (Johnson et al. 2017): count_all"),
    "clevr_dist": VtabTask("structured", 6, "CLEVR: closest_object_distance"),
    "dmlab": VtabTask("structured", 6, "DeepMind Lab (Beattie et al. 2016): distance to reward"),
    "kitti": VtabTask("structured", 4, "KITTI (Geiger et al. 2012): closest_vehicle_distance"),
    "dsprites_loc": VtabTask("structured", 16, "dSprites (Matthey et al. 2017): x position"),
    "dsprites_ori": VtabTask("structured", 16, "dSprites: orientation"),
    "smallnorb_azi": VtabTask("structured", 18, "smallNORB (LeCun et al. 2004): azimuth"),
    "smallnorb_ele": VtabTask("structured", 9, "smallNORB: elevation"),
}
VTAB_GROUPS: dict[str, list[str]] = {
    g: [t for t, info in VTAB_TASKS.items() if info.group == g] for g in ("natural", "specialized", "structured")
}
VTAB_MEAN_CONVENTION = "mean of the three group means (natural, specialized, structured)"

# each task is also registered as its own dataset, so results tables keep the 19 tasks apart
VTAB_DATASET_PREFIX = "vtab-"
# other spellings of task folders in PETL code (NOAH's scripts: cifar100, oxford_pet)
_TASK_ALIASES = {"cifar100": "cifar", "oxford_pet": "oxford_iiit_pet", "pets": "oxford_iiit_pet"}

VTAB_LIST_FILES = ("train800.txt", "val200.txt", "train800val200.txt", "test.txt")
# split -> (train list, validation list or None, test list)
VTAB_SPLITS: dict[str, tuple[str, str | None, str]] = {
    "train800val200": ("train800val200.txt", None, "test.txt"),
    "train800": ("train800.txt", "val200.txt", "val200.txt"),
}


def vtab_group_means(scores: Mapping[str, float]) -> dict[str, float]:
    """Mean score per VTAB group; ``scores`` maps each of the 19 task folder names (or dataset names
    ``vtab-<task>``) to its accuracy.

    Raises:
        DataError: a task is missing or unknown.
    """
    scores = {k.removeprefix(VTAB_DATASET_PREFIX): v for k, v in scores.items()}
    missing = [t for t in VTAB_TASKS if t not in scores]
    unknown = sorted(set(scores) - set(VTAB_TASKS))
    if missing or unknown:
        raise DataError(
            f"A VTAB-1k mean needs all 19 tasks: missing {missing}, unknown {unknown}; "
            f"task names: {', '.join(VTAB_TASKS)}."
        )
    return {g: sum(float(scores[t]) for t in tasks) / len(tasks) for g, tasks in VTAB_GROUPS.items()}


def vtab_mean(scores: Mapping[str, float], convention: str = "groups") -> float:
    """The VTAB-1k mean of 19 per-task scores.

    Args:
        scores: task folder name (or its dataset name ``vtab-<task>``) -> accuracy, all 19 tasks.
        convention: ``groups`` (default, :data:`VTAB_MEAN_CONVENTION`: mean of the three group means) or
            ``tasks`` (plain mean over the 19 tasks).
    """
    groups = vtab_group_means(scores)
    if convention == "groups":
        return sum(groups.values()) / len(groups)
    if convention == "tasks":
        return sum(float(v) for v in scores.values()) / len(VTAB_TASKS)
    raise DataError(f"VTAB mean convention must be 'groups' or 'tasks', got {convention!r}.")


def read_image_list(path: Path, base: Path) -> list[tuple[Path, int]]:
    """``(image path, label)`` per line ``relative/path label`` of ``path`` (paths relative to ``base``).

    Raises:
        DataError: unreadable file, a line without a path and an integer label, or images that do not exist.
    """
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read image list '{path}': {e}") from None
    out, missing = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rel, _, label = line.strip().rpartition(" ")  # the path may hold spaces, the label never does
        if not rel or not label.lstrip("-").isdigit():
            raise DataError(f"'{path}' line {n}: expected 'relative/path label', got {line.strip()!r}.")
        file = base / rel.strip()
        if not file.is_file():
            missing.append((n, rel))
        out.append((file, int(label)))
    if not out:
        raise DataError(f"Image list '{path}' is empty; expected lines 'relative/path label'.")
    if missing:
        n, rel = missing[0]
        raise DataError(
            f"'{path}' line {n}: image '{rel}' does not exist under '{base}'; "
            f"{len(missing)} of {len(out)} listed images are missing."
        )
    return out


def _files(pairs: list[tuple[Path, int]]) -> ImageFiles:
    return ImageFiles([p for p, _ in pairs], [t for _, t in pairs])


def _task_dir(cfg: DataConfig, task: str | None) -> Path:
    if task is None:
        if cfg.root is None:
            raise DataError(
                "Dataset 'vtab-1k' needs --data-root TASK_DIR: one task's folder (e.g. vtab-1k/cifar) holding "
                f"{', '.join(VTAB_LIST_FILES)}; or name the task: --dataset vtab-cifar --data-root vtab-1k."
            )
        return Path(cfg.root).expanduser()
    return dataset_dir(cfg.root, task)


def load_vtab_1k(cfg: DataConfig, task: str | None = None) -> RawDataset:
    """One VTAB-1k task in the split ``cfg.split`` (default ``train800val200``).

    Args:
        cfg: ``root`` is the task's folder, or (with ``task``) the folder holding ``<task>/``.
        task: one of :data:`VTAB_TASKS`; None: the task is ``cfg.root``'s folder name (any name works, with
            the class count then read from the labels).
    """
    base = _task_dir(cfg, task)
    train_list, val_list, test_list = VTAB_SPLITS[cfg.split or "train800val200"]
    needed = [f for f in (train_list, val_list, test_list) if f]
    missing = [f for f in dict.fromkeys(needed) if not (base / f).is_file()]
    if missing:
        raise DataError(
            f"VTAB-1k task folder '{base}' lacks {', '.join(missing)}; a task folder holds its images and "
            f"{', '.join(VTAB_LIST_FILES)} (lines 'relative/path label')."
        )
    train = read_image_list(base / train_list, base)
    val = read_image_list(base / val_list, base) if val_list else None
    test = val if val is not None and test_list == val_list else read_image_list(base / test_list, base)
    labels = {t for _, t in train + test + (val or [])}
    name = task or _TASK_ALIASES.get(base.name, base.name)
    if name in VTAB_TASKS:
        n_classes = VTAB_TASKS[name].num_classes
    else:
        n_classes = max(labels) + 1
        _logger.info("'%s' is not one of the 19 VTAB task folders: %d classes from its labels", base.name, n_classes)
    bad = sorted(t for t in labels if not 0 <= t < n_classes)
    if bad:
        raise DataError(f"VTAB-1k task '{name}' has {n_classes} classes but its lists use label {bad[0]}.")
    return RawDataset(
        _files(train),
        _files(test),
        [str(i) for i in range(n_classes)],
        _files(val) if val is not None else None,
        require_all_classes=False,  # 1000 examples need not cover all 397 SUN397 classes
    )


def _present(task: str | None):
    def present(root: str | None) -> bool:
        if task is None and root is None:
            return False
        base = Path(root).expanduser() if task is None else dataset_dir(root, task)
        return all((base / f).is_file() for f in VTAB_LIST_FILES)

    return present


_SPLITS_TEXT = "train800val200 1000 / test (the task's full test split); train800 800 / val200 200"
register_dataset(
    DatasetInfo(
        "vtab-1k",
        "one VTAB-1k task folder (any of the 19, see adaptertune.data.petl): train800val200 -> test",
        load_vtab_1k,
        source="--data-root TASK_DIR holding train800.txt, val200.txt, train800val200.txt, test.txt (NOAH's release)",
        splits=_SPLITS_TEXT,
        present=_present(None),
        split_choices=tuple(VTAB_SPLITS),
    )
)
for _task, _info in VTAB_TASKS.items():
    register_dataset(
        DatasetInfo(
            f"{VTAB_DATASET_PREFIX}{_task}",
            f"VTAB-1k {_info.group}: {_info.source}",
            partial(load_vtab_1k, task=_task),
            num_classes=_info.num_classes,
            source=f"--data-root DIR holding {_task}/ (NOAH's VTAB-1k release: DIR = vtab-1k)",
            splits=_SPLITS_TEXT,
            present=_present(_task),
            split_choices=tuple(VTAB_SPLITS),
        )
    )
