"""``predict --json/--csv`` records, and the export's preprocessing reproduced from its sidecar alone (issue 27).

The deployer's function below reads nothing but the sidecar: PIL + numpy, no torchvision, no timm. Fed the kinds
of files a practitioner has (grey, RGBA, palette and 16-bit PNGs, RGB JPEGs of odd sizes) it must give the
exported ONNX model the inputs that make it answer what ``adaptertune predict`` answers.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from adaptertune.cli import main
from adaptertune.export import export_run
from adaptertune.runs import ADAPTER_FILE
from helpers import TINY_VIT_ARGS, make_image_folder

# class names a CSV or a line-based parser would break on
CLASSES = ["tabby cat", "a, b", 'say "hi"', "it's"]
FAST = ["--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--quiet"]


def _deploy_images(root):
    """One file per kind a deployer meets, all non-square, some smaller than the model's input."""
    rng = np.random.default_rng(7)
    root.mkdir()
    rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    Image.fromarray(rng.integers(0, 256, (30, 45), dtype=np.uint8), "L").save(root / "grey.png")
    rgba = np.concatenate([rgb(50, 33), rng.integers(0, 256, (50, 33, 1), dtype=np.uint8)], axis=-1)
    rgba[:20, :, 3] = 0  # fully transparent rows over bright colours: PIL's convert keeps the colours
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray(rgb(41, 40)).quantize(16).save(root / "palette.png")
    Image.fromarray(rgb(37, 61)).save(root / "photo.jpg", quality=90)
    Image.fromarray(rgb(27, 20)).save(root / "small.jpg", quality=90)
    Image.fromarray(rng.integers(0, 65536, (52, 40), dtype=np.uint16)).save(root / "grey16.png")
    assert Image.open(root / "grey16.png").mode.startswith("I;16") and Image.open(root / "palette.png").mode == "P"
    return sorted(root.iterdir())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on classes named with spaces, commas and quotes, and images to predict."""
    root = tmp_path_factory.mktemp("predict_output")
    folder = make_image_folder(root / "folder", n_classes=4, n_train=4, n_test=2, size=36)
    for split in ("train", "test"):
        for i, name in enumerate(CLASSES):
            (folder / split / f"class_{i}").rename(folder / split / name)
    run_dir = root / "cats"
    assert main(["train", *TINY_VIT_ARGS, "--data-root", str(folder), "--rank", "4", *FAST,
                 "--out-dir", str(run_dir)]) == 0  # fmt: skip
    return {"root": root, "run": run_dir, "images": _deploy_images(root / "deploy")}


def _cli(argv, capsys):
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_to_stdout_is_pure_json_one_record_per_image(trained, capsys):
    images = [str(p) for p in trained["images"]]
    code, out, err = _cli(["predict", str(trained["run"]), *images, "--topk", "3", "--json", "-"], capsys)
    assert code == 0, err
    records = json.loads(out)  # nothing but the JSON on stdout
    assert [r["path"] for r in records] == images
    for r in records:
        assert set(r) == {"path", "task", "top", "error"} and r["task"] is None and r["error"] is None
        assert len(r["top"]) == 3 and {t["class"] for t in r["top"]} <= set(CLASSES)
        probs = [t["prob"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_topk_larger_than_the_classes_gives_every_class(trained, capsys):
    code, out, _ = _cli(["predict", str(trained["run"]), str(trained["images"][0]), "--json", "-"], capsys)
    (r,) = json.loads(out)
    assert code == 0 and sorted(t["class"] for t in r["top"]) == sorted(CLASSES)  # --topk 5 of 4 classes
    assert sum(t["prob"] for t in r["top"]) == pytest.approx(1.0, abs=1e-5)


def test_csv_keeps_names_with_commas_and_quotes_and_matches_json(trained, tmp_path, capsys):
    images = [str(p) for p in trained["images"]]
    target = tmp_path / "out" / "p.csv"
    code, out, err = _cli(
        ["predict", str(trained["run"]), *images, "--topk", "4", "--csv", str(target), "--json", "-"], capsys
    )
    assert code == 0, err
    records = json.loads(out)  # "wrote p.csv" went to stderr
    assert f"wrote {target}" in err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert list(rows[0]) == ["path", "task", *(f"{x}_{i}" for i in range(1, 5) for x in ("class", "prob")), "error"]
    assert len(rows) == len(images)
    for row, rec in zip(rows, records, strict=True):
        assert row["path"] == rec["path"] and row["task"] == "" and row["error"] == ""
        assert [row[f"class_{i}"] for i in range(1, 5)] == [t["class"] for t in rec["top"]]
        assert [float(row[f"prob_{i}"]) for i in range(1, 5)] == [t["prob"] for t in rec["top"]]  # exact
    assert sorted(rows[0][f"class_{i}"] for i in range(1, 5)) == sorted(CLASSES)


def test_default_output_is_for_eyes_and_flags_replace_it(trained, tmp_path, capsys):
    image = str(trained["images"][0])
    code, out, _ = _cli(["predict", str(trained["run"]), image, "--topk", "2"], capsys)
    assert code == 0 and out.splitlines()[0] == image and len(out.splitlines()) == 3
    code, out, _ = _cli(["predict", str(trained["run"]), image, "--json", str(tmp_path / "p.json")], capsys)
    assert code == 0 and out == f"wrote {tmp_path / 'p.json'}\n"
    assert json.loads((tmp_path / "p.json").read_text())[0]["path"] == image


def test_unreadable_file_is_a_record_with_its_error(trained, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = str(trained["images"][0])
    code, out, err = _cli(["predict", str(trained["run"]), str(bad), good, "--csv", "-"], capsys)
    assert code == 0 and "skipped 1 unreadable of 2 images" in err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == [str(bad), good]
    assert rows[0]["error"] and rows[0]["class_1"] == "" and rows[1]["error"] == "" and rows[1]["class_1"]


def test_multitask_gives_one_record_per_image_and_task(trained, tmp_path, capsys):
    other = tmp_path / "parity"  # a second task on the same backbone (same seed, random init)
    shutil.copytree(trained["run"], other)
    files = [str(trained["run"] / ADAPTER_FILE), str(other / ADAPTER_FILE)]
    images = [str(p) for p in trained["images"][:3]]
    code, out, err = _cli(["predict", "--topk", "2", "--json", "-", "--adapters", *files, *images], capsys)
    assert code == 0, err
    assert "loaded once" in err  # notes go to stderr when stdout carries the data
    records = json.loads(out)
    assert [(r["path"], r["task"]) for r in records] == [(p, t) for p in images for t in ("cats", "parity")]
    assert all(len(r["top"]) == 2 for r in records)
    code, out, _ = _cli(["predict", "--topk", "2", "--csv", "-", "--adapters", *files, *images], capsys)
    assert [(r["path"], r["task"]) for r in csv.DictReader(io.StringIO(out))] == [
        (r["path"], r["task"]) for r in records
    ]


# ---------------------------------------------------------------- the deployer's side
def preprocess_from_sidecar(path, spec: dict) -> np.ndarray:
    """The model input (3, H, W) for image file ``path``, from the sidecar's ``preprocessing`` alone."""
    img = Image.open(path)
    img.load()
    if img.mode.startswith("I;16") or img.mode == "I":  # colour rule: (v + 128) // 257, copied into R, G, B
        grey = ((np.asarray(img).astype(np.int64) + 128) // 257).astype(np.uint8)
        img = Image.fromarray(np.repeat(grey[..., None], 3, axis=-1), "RGB")
    else:  # colour rule: PIL's convert('RGB') (alpha dropped, palette looked up)
        img = img.convert("RGB")
    r = spec["resize"]
    resample = Image.Resampling[r["interpolation"].upper()]
    w, h = img.size
    if r["mode"] == "shorter_side":
        short, long = min(w, h), max(w, h)
        new_long = int(r["size"] * long / short)
        size = (r["size"], new_long) if w <= h else (new_long, r["size"])
    else:
        assert r["mode"] == "squash"
        size = (r["size"][1], r["size"][0])
    if size != img.size:
        img = img.resize(size, resample)
    if spec["crop"] is not None:
        ch, cw = spec["crop"]["size"]
        w, h = img.size
        top, left = round((h - ch) / 2), round((w - cw) / 2)
        img = img.crop((left, top, left + cw, top + ch))
    x = np.asarray(img, dtype=np.float32) / np.float32(255)
    norm = spec["normalize"]
    x = (x - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    assert spec["layout"]["order"] == "NCHW" and spec["layout"]["channels"] == "RGB"
    return x.transpose(2, 0, 1)


def _onnx_probs(model_path, sidecar, images) -> np.ndarray:
    import onnxruntime as ort

    x = np.stack([preprocess_from_sidecar(p, sidecar["preprocessing"]) for p in images])
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"images": x})[0].astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("resize", ["crop", "squash"])
def test_sidecar_alone_reproduces_predict(trained, tmp_path, capsys, resize):
    run_dir = trained["run"]
    if resize == "squash":  # the same adapter file served with the VTAB-1k resize
        run_dir = tmp_path / "squash"
        shutil.copytree(trained["run"], run_dir)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        cfg["data"]["resize"] = "squash"
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    images = trained["images"]
    code, out, err = _cli(["predict", str(run_dir), *map(str, images), "--topk", "4", "--json", "-"], capsys)
    assert code == 0, err
    served = json.loads(out)
    r = export_run(run_dir, "onnx", out=tmp_path / "model.onnx")
    sidecar = json.loads(open(r.sidecar).read())
    spec = sidecar["preprocessing"]
    assert spec["resize"]["mode"] == {"crop": "shorter_side", "squash": "squash"}[resize]
    assert (spec["crop"] is None) == (resize == "squash")
    assert "alpha" in spec["colour"]["rule"] and sidecar["data_config"]["crop_mode"] == {"crop": "center"}.get(
        resize, "squash"
    )
    probs = _onnx_probs(r.path, sidecar, images)
    classes = sidecar["classes"]
    for rec, p in zip(served, probs, strict=True):
        assert rec["top"][0]["class"] == classes[int(p.argmax())], rec["path"]
        for t in rec["top"]:
            assert abs(t["prob"] - p[classes.index(t["class"])]) <= 1e-4, (rec["path"], t)


def test_timm_export_documents_the_runs_preprocessing(tiny_run, tmp_path):
    """timm's own eval transform, built from the exported config.json, is the run's; the card spells it out."""
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config

    from adaptertune.data import build_transforms, open_rgb
    from adaptertune.runs import load_run

    run_dir, _ = tiny_run(tmp_path / "squash", "head")  # squash: not the backbone's own crop, the config says so
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["data"]["resize"] = "squash"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = export_run(run_dir, "timm", out=tmp_path / "timm")
    model = timm.create_model(f"local-dir:{r.path}", pretrained=True)
    theirs = create_transform(**resolve_data_config({}, model=model))
    _, ours = build_transforms(load_run(run_dir, device="cpu").data_config, augment=False, resize="squash")
    for p in _deploy_images(tmp_path / "deploy"):
        img = open_rgb(p)
        assert torch.equal(theirs(img), ours(img)), p
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert config["adaptertune_preprocessing"]["resize"]["mode"] == "squash"
    card = (tmp_path / "timm" / "README.md").read_text()
    assert "## Preprocessing" in card and "convert('RGB')" in card and "drop alpha" in card
    assert "Image.resize((32, 32), Image.Resampling.BICUBIC)" in card  # the squash, with the run's size
