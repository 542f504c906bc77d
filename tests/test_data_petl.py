"""VTAB-1k and the FGVC five in the on-disk layouts their authors distribute (tiny generated fixtures)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptertune import ConfigError, DataConfig, DataError
from adaptertune.cli import main
from adaptertune.data import DATASETS, build_splits, build_transforms, load_raw
from adaptertune.data.petl import VTAB_GROUPS, VTAB_MEAN_CONVENTION, VTAB_TASKS, vtab_group_means, vtab_mean
from helpers import TINY_VIT_ARGS

TINY_DC = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.875}


def image(path: Path, label: int, size: tuple[int, int] = (36, 36)) -> Path:
    """A PNG tinted by its label (learnable), noisy so that files differ."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    colour = np.array([(60 * label) % 256, (120 + 50 * label) % 256, (200 - 40 * label) % 256])
    px = np.clip(colour * 0.75 + rng.integers(0, 64, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(path)
    return path


# ---------------------------------------------------------------- VTAB-1k
def make_vtab_task(folder: Path, n_classes: int = 4, train: int = 3, val: int = 1, test: int = 2) -> Path:
    """NOAH's layout: images/ + train800.txt, val200.txt, train800val200.txt, test.txt ('relative/path label')."""
    lists: dict[str, list[str]] = {"train800": [], "val200": [], "test": []}
    for split, per_class in (("train800", train), ("val200", val), ("test", test)):
        for c in range(n_classes):
            for i in range(per_class):
                rel = f"images/{split}/{c}_{i}.png"
                image(folder / rel, c)
                lists[split].append(f"{rel} {c}")
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for name, lines in lists.items():
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def vtab_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vtab-1k")
    make_vtab_task(root / "kitti")  # a real task name: 4 classes
    return root


def test_vtab_default_split_is_train800val200_to_test(vtab_root):
    raw = load_raw(DataConfig(name="vtab-1k", root=str(vtab_root / "kitti")))
    assert (len(raw.train), len(raw.test), raw.val) == (16, 8, None)
    assert raw.classes == ["0", "1", "2", "3"]
    assert raw.train.paths[0].endswith("images/train800/0_0.png") and raw.train.targets[:4] == [0, 0, 0, 1]
    named = load_raw(DataConfig(name="vtab-kitti", root=str(vtab_root)))  # the per-task entry, root = vtab-1k/
    assert named.train.paths == raw.train.paths and named.test.paths == raw.test.paths
    assert DATASETS.get("vtab-kitti").present(str(vtab_root)) and DATASETS.get("vtab-1k").present(
        str(vtab_root / "kitti")
    )
    assert not DATASETS.get("vtab-cifar").present(str(vtab_root))


def test_vtab_train800_tunes_on_val200_and_never_reads_test(vtab_root, tmp_path):
    cfg = DataConfig(name="vtab-1k", root=str(vtab_root / "kitti"), split="train800", val_fraction=0.1)
    raw = load_raw(cfg)
    assert (len(raw.train), len(raw.val), len(raw.test)) == (12, 4, 4)
    assert raw.test.paths == raw.val.paths and all("/val200/" in p for p in raw.val.paths)
    splits = build_splits(cfg, TINY_DC, raw)
    assert splits.sizes() == {"train": 12, "val": 4, "test": 4}  # the official val200, not a val_fraction cut
    task = make_vtab_task(tmp_path / "dtd", n_classes=2)
    (task / "test.txt").unlink()  # tuning does not need it
    assert len(load_raw(DataConfig(name="vtab-1k", root=str(task), split="train800")).train) == 6
    with pytest.raises(DataError, match="lacks test.txt"):
        load_raw(DataConfig(name="vtab-1k", root=str(task)))


def test_vtab_classes_come_from_the_task_table(tmp_path):
    sun = make_vtab_task(tmp_path / "sun397", n_classes=3)  # 1000 examples need not cover all 397 classes
    raw = load_raw(DataConfig(name="vtab-1k", root=str(sun)))
    assert len(raw.classes) == 397 == VTAB_TASKS["sun397"].num_classes
    custom = make_vtab_task(tmp_path / "my_task", n_classes=3)  # not a VTAB task: classes from the labels
    assert len(load_raw(DataConfig(name="vtab-1k", root=str(custom))).classes) == 3
    kitti = make_vtab_task(tmp_path / "kitti", n_classes=5)  # kitti has 4 classes
    with pytest.raises(DataError, match="'kitti' has 4 classes but its lists use label 4"):
        load_raw(DataConfig(name="vtab-1k", root=str(kitti)))


def test_vtab_bad_inputs_are_one_line_errors(vtab_root, tmp_path):
    with pytest.raises(ConfigError, match="no split 'train1000'.*train800val200, train800"):
        load_raw(DataConfig(name="vtab-1k", root=str(vtab_root / "kitti"), split="train1000"))
    with pytest.raises(ConfigError, match="'imagefolder' has no split 'train800'; .* unset"):
        load_raw(DataConfig(name="imagefolder", root=str(tmp_path), split="train800"))
    with pytest.raises(DataError, match="needs --data-root TASK_DIR"):
        load_raw(DataConfig(name="vtab-1k"))
    task = make_vtab_task(tmp_path / "eurosat", n_classes=2)
    (task / "test.txt").write_text("images/test/0_0.png\n")
    with pytest.raises(DataError, match="test.txt' line 1: expected 'relative/path label'"):
        load_raw(DataConfig(name="vtab-1k", root=str(task)))
    (task / "test.txt").write_text("images/test/0_0.png 0\nimages/gone.png 1\n")
    with pytest.raises(DataError, match="line 2: image 'images/gone.png' does not exist.*1 of 2"):
        load_raw(DataConfig(name="vtab-1k", root=str(task)))


def test_squash_resizes_the_whole_image_without_a_crop(tmp_path):
    from torchvision.transforms import functional as F

    img = Image.open(image(tmp_path / "wide.png", 1, size=(64, 16))).convert("RGB")
    _, squash = build_transforms(TINY_DC, augment=False, resize="squash")
    _, crop = build_transforms(TINY_DC, augment=False, resize="crop")
    direct = F.normalize(
        F.to_tensor(F.resize(img, [32, 32], interpolation=F.InterpolationMode.BICUBIC)), [0.5] * 3, [0.5] * 3
    )
    out = squash(img)
    assert out.shape == crop(img).shape == (3, 32, 32)
    assert torch.allclose(out, direct, atol=1e-6) and not torch.allclose(crop(img), direct, atol=1e-2)
    with pytest.raises(ConfigError, match="data.resize.*crop, squash"):
        DataConfig(resize="stretch")


def test_vtab_mean_is_the_mean_of_the_group_means():
    scores = {t: {"natural": 70.0, "specialized": 80.0, "structured": 40.0}[i.group] for t, i in VTAB_TASKS.items()}
    assert [len(v) for v in VTAB_GROUPS.values()] == [7, 4, 8]
    assert vtab_group_means(scores) == {"natural": 70.0, "specialized": 80.0, "structured": 40.0}
    assert vtab_mean(scores) == pytest.approx((70 + 80 + 40) / 3)  # 63.33
    assert vtab_mean(scores, "tasks") == pytest.approx((7 * 70 + 4 * 80 + 8 * 40) / 19)  # 59.47
    assert vtab_mean({f"vtab-{t}": v for t, v in scores.items()}) == pytest.approx(190 / 3)  # dataset names
    assert "group means" in VTAB_MEAN_CONVENTION
    with pytest.raises(DataError, match="needs all 19 tasks: missing \\['cifar'\\]"):
        vtab_mean({t: v for t, v in scores.items() if t != "cifar"})


def test_vtab_preset_is_the_literature_protocol():
    from adaptertune.sweeps import load_preset
    from adaptertune.sweeps.sweep import expand_grid

    spec = load_preset("vtab")
    base = spec.base
    assert base["data"]["resize"] == "squash" and base["data"]["augment"] is False
    assert base["data"]["split"] == "train800val200" and base["data"]["val_fraction"] == 0.0
    assert (base["train"]["epochs"], base["train"]["batch_size"], base["train"]["weight_decay"]) == (100, 64, 0.0001)
    names = {p.config["data"]["name"] for p in expand_grid(spec)}
    assert names == {f"vtab-{t}" for t in VTAB_TASKS}


def test_vtab_task_trains_with_the_protocol_recorded(vtab_root, tmp_path):
    out = tmp_path / "run"
    args = ["train", *TINY_VIT_ARGS, "--dataset", "vtab-kitti", "--data-root"]
    args += [str(vtab_root), "--data-split", "train800val200", "--resize", "squash", "--no-augment"]
    args += ["--val-fraction", "0", "--method", "head", "--epochs", "1", "--batch-size", "16", "--num-workers", "0"]
    assert main([*args, "--quiet", "--out-dir", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["dataset"] == "vtab-kitti" and s["split_sizes"] == {"train": 16, "val": 0, "test": 8}
    assert s["protocol"]["resize"] == "squash" and s["protocol"]["data_split"] == "train800val200"
    assert s["protocol"]["augment"] == "none" and s["protocol"]["selection"] == "last_epoch"


# ---------------------------------------------------------------- FGVC
def make_cub_style(folder: Path, class_ids: list[int], per_class: tuple[int, int] = (2, 1), uuids: bool = False):
    """images.txt, image_class_labels.txt, train_test_split.txt, classes.txt + images/<class>/<file>."""
    images, labels, split = [], [], []
    for c in class_ids:
        for i in range(sum(per_class)):
            iid = str(uuid.uuid4()) if uuids else str(len(images) + 1)
            rel = f"{c:03d}.Class_{c}/img_{c}_{i}.jpg"
            image(folder / "images" / rel, c % 7)
            images.append(f"{iid} {rel}")
            labels.append(f"{iid} {c}")
            split.append(f"{iid} {1 if i < per_class[0] else 0}")
    for name, lines in (("images", images), ("image_class_labels", labels), ("train_test_split", split)):
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    names = [f"{c} {c:03d}.Class_{c}" for c in range(1, max(class_ids) + 3)]  # more classes than used (NABirds)
    (folder / "classes.txt").write_text("\n".join(names) + "\n")
    return folder


def write_vpt_json(folder: Path, image_dir: Path, class_of) -> None:
    """VPT's splits: {path relative to image_dir: class id}; every third image is test, and val is one image per
    class carved from train."""
    rels = sorted(str(p.relative_to(image_dir)) for p in image_dir.rglob("*.jpg"))
    split: dict[str, dict[str, int]] = {"train": {}, "val": {}, "test": {}}
    seen: set[int] = set()
    for n, rel in enumerate(rels):
        c = class_of(rel)
        key = "test" if n % 3 == 2 else ("val" if c not in seen else "train")
        seen.add(c)
        split[key][rel] = c
    for k, v in split.items():
        (folder / f"{k}.json").write_text(json.dumps(v))


def test_cub200_official_and_vpt_splits(tmp_path):
    base = make_cub_style(tmp_path / "CUB_200_2011", [1, 2, 3], per_class=(2, 1))
    raw = load_raw(DataConfig(name="cub200", root=str(tmp_path)))
    assert (len(raw.train), len(raw.test)) == (6, 3) and raw.classes == ["Class 1", "Class 2", "Class 3"]
    assert raw.train.targets == [0, 0, 1, 1, 2, 2] and raw.train.paths[0].endswith("001.Class_1/img_1_0.jpg")
    write_vpt_json(base, base / "images", lambda rel: int(rel[:3]))
    vpt = load_raw(DataConfig(name="cub200", root=str(base), split="vpt"))
    assert (len(vpt.train), len(vpt.val), len(vpt.test)) == (3, 3, 3) and vpt.classes == raw.classes
    assert sorted(vpt.test.paths) == sorted(raw.test.paths)
    trainval = load_raw(DataConfig(name="cub200", root=str(base), split="vpt-trainval"))
    assert (len(trainval.train), trainval.val) == (6, None)
    assert sorted(zip(trainval.train.paths, trainval.train.targets)) == sorted(zip(raw.train.paths, raw.train.targets))


def test_nabirds_uuid_ids_and_sparse_leaf_classes(tmp_path):
    make_cub_style(tmp_path / "nabirds", [295, 313, 1009], per_class=(1, 2), uuids=True)
    raw = load_raw(DataConfig(name="nabirds", root=str(tmp_path / "nabirds")))
    assert (len(raw.train), len(raw.test)) == (3, 6)
    assert raw.classes == ["295.Class_295", "313.Class_313", "1009.Class_1009"]  # used ids only, in id order
    assert raw.test.targets == [0, 0, 1, 1, 2, 2]


def test_stanford_dogs_mat_lists(tmp_path):
    import scipy.io

    base = tmp_path / "Stanford-dogs"
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    lists = {"train": ([], []), "test": ([], [])}
    for y, breed in enumerate(breeds, 1):
        for i, s in enumerate(("train", "train", "test")):
            rel = f"{breed}/{breed.split('-')[0]}_{i}.jpg"
            image(base / "Images" / rel, y)
            lists[s][0].append(rel)
            lists[s][1].append(y)
    for s, (files, labels) in lists.items():
        cells = np.empty((len(files), 1), dtype=object)
        cells[:, 0] = files
        scipy.io.savemat(base / f"{s}_list.mat", {"file_list": cells, "labels": np.array(labels)[:, None]})
    raw = load_raw(DataConfig(name="stanford-dogs", root=str(tmp_path)))
    assert (len(raw.train), len(raw.test)) == (4, 2) and raw.classes == ["Chihuahua", "Japanese spaniel"]
    assert raw.train.targets == [0, 0, 1, 1] and DATASETS.get("stanford-dogs").present(str(tmp_path))
    with pytest.raises(DataError, match="'stanford-dogs' \\(split 'official'\\) not found: .* lacks Images"):
        load_raw(DataConfig(name="stanford-dogs", root=str(tmp_path / "empty")))


def test_stanford_cars_all_images_release(tmp_path):
    import scipy.io

    base = tmp_path / "Stanford-cars"
    rows = [(f"car_ims/{i:06d}.jpg", c, t) for i, (c, t) in enumerate([(1, 0), (1, 1), (2, 0), (2, 0), (2, 1)], 1)]
    annos = np.zeros((1, len(rows)), dtype=[("relative_im_path", "O"), ("class", "O"), ("test", "O")])
    for j, (p, c, t) in enumerate(rows):
        image(base / p, c)
        annos[0, j] = (p, np.array([[c]], dtype=np.uint8), np.array([[t]], dtype=np.uint8))
    names = np.empty((1, 2), dtype=object)
    names[0, :] = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    scipy.io.savemat(base / "cars_annos.mat", {"annotations": annos, "class_names": names})
    raw = load_raw(DataConfig(name="stanford-cars", root=str(base)))
    assert (len(raw.train), len(raw.test)) == (3, 2) and raw.classes[1] == "Acura RL Sedan 2012"
    assert raw.train.targets == [0, 1, 1] and raw.test.paths[1].endswith("car_ims/000005.jpg")
    write_vpt_json(base, base, lambda rel: 1 + int(rel[-6:-4]) % 2)  # ids 1..2, as the mat's class ids
    vpt = load_raw(DataConfig(name="stanford-cars", root=str(base), split="vpt"))
    assert vpt.classes == raw.classes and len(vpt.train) + len(vpt.val) + len(vpt.test) == 5


def test_flowers102_reads_vpt_json(tmp_path):
    base = tmp_path / "OxfordFlower"
    for i in range(1, 7):
        image(base / "jpg" / f"image_{i:05d}_{i % 3}.jpg", i % 2)
    write_vpt_json(base, base, lambda rel: int(rel[-5]) % 2)  # ids 0..1: named by their ids
    raw = load_raw(DataConfig(name="flowers102", root=str(base), split="vpt"))
    assert raw.classes == ["0", "1"] and len(raw.train) + len(raw.val) + len(raw.test) == 6
    with pytest.raises(DataError, match="'flowers102' \\(split 'vpt-trainval'\\) not found: .* lacks train.json"):
        load_raw(DataConfig(name="flowers102", root=str(tmp_path / "nothing"), split="vpt-trainval"))
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("train", "val", "test"):
        (bad / f"{f}.json").write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(DataError, match="must map image paths to integer class ids"):
        load_raw(DataConfig(name="cub200", root=str(bad), split="vpt"))
