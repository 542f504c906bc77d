"""Task identity: an adapter file records the task it was trained on, and every command that loads it into a
run folder (eval, predict, export in every format, multi-task serving) checks it against the folder's summary.

The case of issue 27: two tasks on the same images (a 4-class folder and its even/odd relabelling), same
method and rank; the even/odd file swapped into the 4-class run folder. The commands on a swapped folder
(exit 2, one line, nothing written) are in the bad-input catalogue (test_bad_inputs.py).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from adaptertune.cli import main
from adaptertune.engine import load_tensors, save_tensors
from adaptertune.errors import CheckpointError
from adaptertune.runs import ADAPTER_FILE, load_run
from adaptertune.runs.adapter_file import TASK_KEYS, check_task, read_adapter_file
from helpers import TINY_VIT, backbone_flags, make_image_folder

TINY = backbone_flags({"name": TINY_VIT["name"]})  # the tiny ViT; each test adds its weights flag
FAST = ["--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--quiet", "--no-pretrained"]


def parity_folder(digits: Path, out: Path) -> Path:
    """The same images as ``digits`` (classes class_0..class_3), relabelled even/odd."""
    for split in ("train", "test"):
        for c in range(4):
            dst = out / split / ("even" if c % 2 == 0 else "odd")
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted((digits / split / f"class_{c}").glob("*.png")):
                shutil.copy(f, dst / f"{c}_{f.name}")
    return out


def train(data_root: Path, out: Path) -> Path:
    args = ["train", *TINY, *FAST, "--data-root", str(data_root), "--rank", "4", "--out-dir", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    digits = make_image_folder(root / "digits", n_classes=4, n_train=4, n_test=2, size=36)
    parity = parity_folder(digits, root / "parity")
    runs = {"digits": train(digits, root / "run-digits"), "parity": train(parity, root / "run-parity")}
    swapped = root / "swapped"
    shutil.copytree(runs["digits"], swapped)
    shutil.copy(runs["parity"] / ADAPTER_FILE, swapped / ADAPTER_FILE)
    return {"root": root, "digits_folder": digits, "parity_folder": parity, "swapped": swapped, **runs}


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err.strip()


def test_adapter_file_records_its_task(tasks):
    _, meta = read_adapter_file(tasks["parity"] / ADAPTER_FILE)
    summary = json.loads((tasks["parity"] / "summary.json").read_text())
    assert meta["classes"] == ["even", "odd"]
    assert meta["task"] == {k: summary["protocol"][k] for k in TASK_KEYS if k in summary["protocol"]}
    assert meta["task"]["dataset"] == "imagefolder"
    assert meta["task"]["data_root"] == str(tasks["parity_folder"].resolve())
    assert meta["task"]["image_counts"] == {"train": 16, "test": 8}


def test_the_runs_own_files_still_work(tasks, capsys):
    image = str(next((tasks["digits_folder"] / "test" / "class_1").glob("*.png")))
    assert run_cli(["eval", str(tasks["digits"])], capsys)[0] == 0
    assert run_cli(["predict", str(tasks["parity"]), image, "--topk", "1"], capsys)[0] == 0


def test_a_bare_file_serves_its_own_classes(tasks, capsys, tmp_path):
    bare = tmp_path / "parity.safetensors"
    shutil.copy(tasks["parity"] / ADAPTER_FILE, bare)
    image = str(next((tasks["digits_folder"] / "test" / "class_1").glob("*.png")))
    capsys.readouterr()
    assert main(["predict", "--adapters", str(tasks["digits"] / ADAPTER_FILE), str(bare), image]) == 0
    out = capsys.readouterr().out
    assert "[parity] " in out and re.search(r"\[parity\] (even|odd) ", out), out
    assert re.search(r"\[run-digits\] class_\d ", out), out


def strip_task(path: Path) -> None:
    """Rewrite an adapter file as adaptertune wrote it before it recorded the task."""
    tensors, meta = load_tensors(path)
    meta.pop("task")
    save_tensors(path, tensors, meta)


def test_old_file_without_task_keys_loads_with_a_warning(tasks, tmp_path, caplog):
    run_dir = tmp_path / "old"
    shutil.copytree(tasks["digits"], run_dir)
    strip_task(run_dir / ADAPTER_FILE)
    with caplog.at_level(logging.WARNING, logger="adaptertune"):
        loaded = load_run(run_dir, device="cpu")
    assert loaded.classes == ["class_0", "class_1", "class_2", "class_3"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("records no dataset" in w and "only its class names are checked" in w for w in warnings), warnings


def test_old_file_of_another_task_is_still_caught_by_its_classes(tasks, tmp_path):
    run_dir = tmp_path / "old-swapped"
    shutil.copytree(tasks["swapped"], run_dir)
    strip_task(run_dir / ADAPTER_FILE)
    expected = r"trained on an unrecorded dataset \(2 classes: even, odd\) but run folder .* \(4 classes"
    with pytest.raises(CheckpointError, match=expected):
        load_run(run_dir, device="cpu")


SUMMARY = {
    "dataset": "imagefolder",
    "classes": ["a", "b"],
    "protocol": {
        "dataset": "imagefolder",
        "data_root": "/data/x",
        "classes": ["a", "b"],
        "image_counts": {"train": 10, "test": 4},
    },
}
META = {"classes": ["a", "b"], "task": {"dataset": "imagefolder", "data_root": "/data/x", "image_counts": {}}}


@pytest.mark.parametrize(
    ("task", "classes", "expected"),
    [
        ({"data_root": "/data/y"}, None, r"trained on imagefolder at '/data/y' \(2 classes: a, b\) but run folder"),
        ({"dataset": "csv"}, None, r"trained on csv at '/data/x'.* is imagefolder at '/data/x'"),
        ({}, ["b", "a"], r"\(2 classes: b, a\) but run folder 'R' is imagefolder at '/data/x' \(2 classes: a, b\)"),
        ({"image_counts": {"train": 11, "test": 4}}, None, r"image counts train 11, test 4 vs train 10, test 4"),
        ({"data_split": "train800"}, None, r"data split 'train800' vs none"),
    ],
)
def test_check_names_the_field_that_differs(task, classes, expected):
    meta = {"classes": classes or META["classes"], "task": {**META["task"], "image_counts": {"train": 10, "test": 4}}}
    meta["task"].update(task)
    with pytest.raises(CheckpointError, match=expected) as e:
        check_task(meta, SUMMARY, "F", "R")
    assert "\n" not in str(e.value) and str(e.value).startswith("F was trained on")
    check_task({**META, "task": {**META["task"], "image_counts": {"train": 10, "test": 4}}}, SUMMARY, "F", "R")


def test_many_classes_are_shortened():
    summary = {"protocol": {"dataset": "mnist-5k", "data_root": None, "classes": [str(i) for i in range(10)]}}
    meta = {"classes": ["even", "odd"], "task": {"dataset": "mnist-parity", "data_root": None}}
    with pytest.raises(CheckpointError) as e:
        check_task(meta, summary, "F", "R")
    assert (
        "trained on mnist-parity (2 classes: even, odd) but run folder 'R' is mnist-5k (10 classes: 0, 1, 2, ..., 9)"
    ) in str(e.value)
