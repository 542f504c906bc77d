"""Bad-input catalogue: each bad input through the CLI exits 2 with one line that names the problem and what
is accepted, prints no traceback, and leaves no partial run directory."""

import errno
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from adaptertune.cli import main
from adaptertune.runs import ADAPTER_FILE
from helpers import TINY_VIT_ARGS, TINY_VIT_TIMM, backbone_flags, make_image_folder

FAST = ["--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    folder = make_image_folder(root / "folder", n_classes=3, n_train=4, n_test=2, size=36)
    corrupt = make_image_folder(root / "corrupt", n_classes=3, n_train=4, n_test=2, size=36)
    (corrupt / "train" / "class_0" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "a_file").write_text("not a folder")
    (root / "bad.yaml").write_text("train: [unclosed\n")
    (root / "empty").mkdir()
    (root / "sweep.yaml").write_text(
        "base: {backbone: {name: test_vit, pretrained: false}, data: {name: imagefolder, root: x}}\n"
        "grid: {method: [head]}\n"
    )
    images = sorted((folder / "train" / "class_0").glob("*.png"))
    rows = ["path,lable,split", *(f"{p.relative_to(root)},a,train" for p in images)]
    (root / "typo.csv").write_text("\n".join(rows) + "\n")
    high = make_image_folder(root / "high_depth", n_classes=3, n_train=4, n_test=2, size=36)
    bad_float = np.full((36, 36), 7.5, np.float32)  # mode F outside [0, 1]
    Image.fromarray(bad_float).save(high / "train" / "class_0" / "0.tif")
    (high / "train" / "class_0" / "0.png").unlink()
    run_dir = root / "finished"
    assert main(["train", *TINY_VIT_ARGS, "--data-root", str(folder), "--rank", "4", *FAST,
                 "--out-dir", str(run_dir)]) == 0  # fmt: skip
    return {"root": root, "folder": folder, "corrupt": corrupt, "run": run_dir}


def interrupted_copy(d: dict, name: str, checkpoint_bytes: bytes | None) -> Path:
    """A run folder as a killed run leaves it: config.yaml (+ metrics), a checkpoint, no summary."""
    dst = d["root"] / name
    shutil.copytree(d["run"], dst)
    for f in ("summary.json", "adaptertune_weights.safetensors"):
        (dst / f).unlink()
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["out_dir"] = str(dst)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    if checkpoint_bytes is not None:
        (dst / "checkpoint.safetensors").write_bytes(checkpoint_bytes)
    return dst


def finished_copy(d: dict, name: str, edit) -> Path:
    """A finished run whose config was edited to another model (so the adapter file no longer fits it)."""
    dst = d["root"] / name
    shutil.copytree(d["run"], dst)
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    edit(cfg)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def _train(*args):
    return lambda d: ["train", *TINY_VIT_ARGS, "--data-root", str(d["folder"]), *FAST, *args]


def _predict(d):
    return ["predict", str(d["run"]), str(d["folder"] / "test" / "class_0" / "0.png")]


def _set(path: str, value):
    def edit(cfg):
        section, key = path.split(".")
        cfg[section][key] = value

    return edit


# (id, argv builder, regex the one-line message must match: the problem and what is accepted)
CASES = [
    ("unknown-backbone", lambda d: ["train", "--backbone", "vit_nope_patch99", "--no-pretrained",
                                    "--data-root", str(d["folder"]), *FAST], r"vit_nope_patch99"),
    ("unknown-dataset", _train("--dataset", "imagenet_nope"), r"imagenet_nope.*imagefolder"),
    ("unknown-method", _train("--method", "lora_nope"), r"lora_nope.*adapter"),
    ("unknown-config-key", _train("lr_max=0.1"), r"Unknown config key 'lr_max'. Valid keys"),
    ("unknown-section-key", _train("train.foo=1"), r"Unknown config key 'train.foo'"),
    ("rank-zero", _train("--rank", "0"), r"adapter.rank.*>= 1, got 0"),
    ("rank-negative", _train("--rank", "-3"), r"adapter.rank.*>= 1, got -3"),
    ("rank-non-integer", _train("--rank", "2.5"), r"adapter.rank.*integer, got 2.5"),
    ("rank-text", _train("--rank", "eight"), r"adapter.rank.*integer, got 'eight'"),
    ("rank-above-width", _train("--rank", "500"), r"rank.*500.*larger than the backbone width 192; use 1..192"),
    ("placement-unknown", _train("--placement", "middle"), r"placement 'middle'.*accepted: all, every:K"),
    ("placement-out-of-range", _train("--placement", "0,40"), r"40 is out of range.*blocks 0..11"),
    ("placement-every-zero", _train("--placement", "every:0"), r"every:0.*positive integer"),
    ("alpha-nan", _train("--alpha", "nan"), r"adapter.alpha.*finite number, got nan"),
    ("alpha-negative", _train("--alpha", "-1"), r"adapter.alpha.*>= 0, got -1"),
    ("lr-negative", _train("--lr", "-0.1"), r"train.lr.*> 0, got -0.1"),
    ("lr-zero", _train("--lr", "0"), r"train.lr.*> 0, got 0"),
    ("lr-text", _train("--lr", "fast"), r"train.lr.*number, got 'fast'"),
    ("epochs-zero", _train("--epochs", "0"), r"train.epochs.*>= 1, got 0"),
    ("epochs-fraction", _train("--epochs", "1.5"), r"train.epochs.*integer, got 1.5"),
    ("batch-size-zero", _train("--batch-size", "0"), r"train.batch_size.*>= 1, got 0"),
    ("val-fraction-one", _train("--val-fraction", "1"), r"data.val_fraction.*\[0, 1\), got 1"),
    ("precision-unknown", _train("--precision", "fp8"), r"train.precision.*auto, fp32, bf16, fp16; got 'fp8'"),
    ("checkpoint-every-zero", _train("checkpoint_every_steps=0"), r"checkpoint_every_steps.*>= 1, got 0"),
    ("missing-data-root", lambda d: ["train", *TINY_VIT_ARGS, "--data-root", str(d["root"] / "nope"),
                                     *FAST], r"Data root .*nope' does not exist; expected a folder"),
    ("no-data-root", lambda d: ["train", *TINY_VIT_ARGS, *FAST], r"needs --data-root DIR"),
    ("corrupt-image-strict", lambda d: ["train", *TINY_VIT_ARGS, "--data-root", str(d["corrupt"]),
                                        "--strict", *FAST], r"Corrupt image .*0.png"),
    # the tiny ViT by its timm name, which has hub weights (none offline)
    ("offline-no-weights", lambda d: ["train", *backbone_flags({**TINY_VIT_TIMM, "pretrained": True}),
                                      "--data-root", str(d["folder"]), *FAST], r"(?i)weights"),
    ("weights-file-missing", _train("--weights", "/nonexistent/w.safetensors"), r"/nonexistent/w.safetensors"),
    ("config-file-missing", _train("--config", "/nonexistent/c.yaml"), r"Config file '/nonexistent/c.yaml' does not"),
    ("config-file-bad-yaml", lambda d: [*_train("--config", str(d["root"] / "bad.yaml"))(d)], r"not valid YAML"),
    ("output-under-a-file", lambda d: [*_train()(d), "--out-dir", str(d["root"] / "a_file" / "run")],
     r"Cannot create output folder .*a_file/run"),
    ("output-is-a-file", lambda d: [*_train()(d), "--out-dir", str(d["root"] / "a_file")],
     r"exists and is not a folder"),
    ("output-not-empty", lambda d: [*_train()(d), "--out-dir", str(d["run"])], r"not empty.*--overwrite"),
    ("resume-truncated-checkpoint", lambda d: ["train", "--quiet", "--resume", str(interrupted_copy(
        d, "trunc", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")), ], r"truncated or not a safetensors file"),
    ("resume-foreign-checkpoint", lambda d: ["train", "--quiet", "--resume", str(interrupted_copy(
        d, "foreign", (d["run"] / ADAPTER_FILE).read_bytes()))], r"not an adaptertune training checkpoint"),
    ("resume-not-a-run", lambda d: ["train", "--quiet", "--resume", str(d["folder"])], r"not a run folder"),
    ("resume-finished", lambda d: ["train", "--quiet", "--resume", str(d["run"])], r"already finished"),
    ("eval-not-a-run", lambda d: ["eval", str(d["folder"])], r"not a finished run folder: summary.json is missing"),
    ("eval-truncated-adapter", lambda d: ["eval", str(_truncate(finished_copy(d, "trunc_adapter", lambda c: None)))],
     r"truncated or not a safetensors file"),
    ("eval-adapter-other-rank", lambda d: ["eval", str(finished_copy(d, "rank8", _set("adapter.rank", 8)))],
     r"(?i)rank|shape"),
    ("eval-adapter-other-backbone", lambda d: ["eval", str(finished_copy(
        d, "other_bb", lambda c: c["backbone"]["args"].update(embed_dim=96, num_heads=3)))],
     r"(?i)weights differ|width|shape|backbone arguments"),
    ("predict-missing-image", lambda d: ["predict", str(d["run"]), str(d["root"] / "nope.png")],
     r"Cannot read image .*nope.png"),
    # issue 18: every output path is checked before anything is written
    ("report-out-is-a-file", lambda d: ["report", str(d["run"]), "--out", str(d["root"] / "a_file")],
     r"Cannot write into '.*a_file': it exists and is not a folder"),
    ("report-out-under-a-file", lambda d: ["report", str(d["run"]), "--out", str(d["root"] / "a_file" / "rep")],
     r"Cannot create output folder '.*a_file/rep': '.*a_file' is a file, not a folder"),
    ("sweep-results-dir-is-a-file", lambda d: ["sweep", str(d["root"] / "sweep.yaml"), "--results-dir",
                                               str(d["root"] / "a_file"), "--dry-run"], r"a_file': it exists"),
    ("sweep-results-dir-under-a-file", lambda d: ["sweep", str(d["root"] / "sweep.yaml"), "--results-dir",
                                                  str(d["root"] / "a_file" / "s")], r"a_file' is a file, not a"),
    ("export-out-is-a-folder", lambda d: ["export", str(d["run"]), "--out", str(d["root"] / "empty")],
     r"Cannot write '.*empty': it is a folder; give a file name"),
    ("export-out-under-a-file", lambda d: ["export", str(d["run"]), "--out", str(d["root"] / "a_file" / "m.pt")],
     r"a_file' is a file, not a folder"),
    # issue 18: images and CSV headers
    ("predict-empty-folder", lambda d: ["predict", str(d["run"]), str(d["root"] / "empty")],
     r"Folder '.*empty' holds no image files"),
    ("predict-glob-matches-nothing", lambda d: ["predict", str(d["run"]), str(d["root"] / "*.gif")],
     r"Pattern '.*\*.gif' matches no file"),
    ("predict-nothing-readable", lambda d: ["predict", str(d["run"]),
                                            str(d["corrupt"] / "train" / "class_0" / "0.png")],
     r"None of the 1 images could be read; '.*0.png'"),
    ("high-depth-image-strict", lambda d: ["train", *TINY_VIT_ARGS, "--data-root",
                                           str(d["root"] / "high_depth"), "--strict", *FAST],
     r"0.tif has mode 'F' with values 7.5..7.5; accepted"),
    ("csv-header-typo", lambda d: ["train", *TINY_VIT_ARGS, "--dataset", "csv", "--data-root",
                                   str(d["root"] / "typo.csv"), *FAST],
     r"header 'path,lable,split': unknown column 'lable'; accepted columns"),
    # issue 16: the pre-resized cache of a folder dataset
    ("cache-of-an-array-dataset", lambda d: ["train", *TINY_VIT_ARGS, "--dataset", "mnist-5k", "--subset",
                                             "8", "--cache", str(d["root"] / "cache_x"), *FAST],
     r"`data.cache` pre-resizes datasets read from image files; 'mnist-5k' is held in memory already"),
    ("cache-under-a-file", lambda d: _train("--cache", str(d["root"] / "a_file" / "c"))(d),
     r"a_file' is a file, not a folder"),
    # issue 27: predict's records (--json, --csv); checked before the model loads, nothing written
    ("predict-json-and-csv-both-stdout", lambda d: [*_predict(d), "--json", "-", "--csv", "-"],
     r"--json - and --csv - both ask for stdout; send one of them to a FILE"),
    ("predict-json-and-csv-same-file", lambda d: [*_predict(d), "--json", str(d["root"] / "p.out"), "--csv",
                                                  str(d["root"] / "p.out")], r"both name '.*p.out'; give them diff"),
    ("predict-json-under-a-file", lambda d: [*_predict(d), "--json", str(d["root"] / "a_file" / "p.json")],
     r"Cannot write '.*a_file/p.json': '.*a_file' is a file, not a folder"),
    ("predict-csv-is-a-folder", lambda d: [*_predict(d), "--csv", str(d["root"] / "empty")],
     r"Cannot write '.*empty': it is a folder; give a file name"),
    ("predict-topk-zero", lambda d: [*_predict(d), "--topk", "0"], r"--topk must be >= 1, got 0"),
]  # fmt: skip


def _truncate(run_dir: Path) -> Path:
    f = run_dir / "adaptertune_weights.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    return run_dir


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case_id,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, argv, expected, data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = argv(data)
    out_dir = tmp_path / "out"
    if "--out-dir" not in args and "--resume" not in args and args[0] == "train":
        args += ["--out-dir", str(out_dir)]
    before = _snapshot(data["root"])
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert re.search(expected, err), err
    assert not out_dir.exists(), "a partial run directory was left behind"
    copies = ("trunc", "foreign", "rank8", "other_bb")  # the test's own run folders, and their locks (.trunc.lock)
    new = {p for p in _snapshot(data["root"]) - before if not p.lstrip(".").startswith(copies)}
    assert not new, new
    assert not [p for p in _snapshot(data["root"]) if p.endswith(".tmp")]


def test_predict_skips_unreadable_files_and_counts_them(data, capsys):
    capsys.readouterr()
    assert main(["predict", str(data["run"]), str(data["corrupt"] / "train"), "--topk", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.count(".png\n") == 11  # 3 classes x 4 images, one of them unreadable
    assert "class_0/0.png" not in out.out and "skipped 1 unreadable of 12 images" in out.err
    assert "Traceback" not in out.err


def test_predict_takes_a_glob(data, capsys):
    capsys.readouterr()
    assert main(["predict", str(data["run"]), str(data["folder"] / "test" / "*" / "*.png"), "--topk", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.count(".png\n") == 6 and "skipped" not in out.err


def test_run_files_honour_the_umask(data):
    from adaptertune.atomic import file_mode

    files = [p for p in data["run"].iterdir() if p.is_file() and not p.name.startswith(".")]
    assert {"config.yaml", "summary.json", ADAPTER_FILE} <= {p.name for p in files}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(file_mode()) for p in files}


def test_export_to_a_full_disk_is_one_line_and_keeps_the_old_file(data, tmp_path, capsys, monkeypatch):
    from adaptertune import atomic

    target = tmp_path / "model.pt"
    target.write_bytes(b"the earlier export")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    capsys.readouterr()
    assert main(["export", str(data["run"]), "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(r"Cannot write '.*model.pt': No space left on device; the previous version .* intact", err)
    assert target.read_bytes() == b"the earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left


def test_predict_records_to_a_full_disk_are_one_line_and_leave_nothing(data, tmp_path, capsys, monkeypatch):
    from adaptertune import atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    capsys.readouterr()
    assert main([*_predict(data), "--csv", str(tmp_path / "p.csv")]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(r"Cannot write '.*p.csv': No space left on device; nothing was written", err)
    assert out == "" and list(tmp_path.iterdir()) == []  # no partial or temporary file


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25


def test_debug_shows_the_traceback(data):
    with pytest.raises(Exception, match="adapter.rank"):
        main(["--debug", "train", "--rank", "0", "--data-root", str(data["folder"])])


# issue 27: an adapter file of another task (same method and rank) swapped into a run folder
@pytest.fixture(scope="module")
def swapped_task(data):
    """``data``'s 3-class run folder holding the adapter file of a 2-class task trained on the same images."""
    root = data["root"]
    two = root / "two_classes"
    for split in ("train", "test"):
        for c in range(3):
            dst = two / split / ("first" if c == 0 else "rest")
            dst.mkdir(parents=True, exist_ok=True)
            for f in (data["folder"] / split / f"class_{c}").glob("*.png"):
                shutil.copy(f, dst / f"{c}_{f.name}")
    other = root / "two_class_run"
    assert main(["train", *TINY_VIT_ARGS, "--data-root", str(two), "--rank", "4", *FAST,
                 "--out-dir", str(other)]) == 0  # fmt: skip
    run_dir = root / "swapped_task"
    shutil.copytree(data["run"], run_dir)
    shutil.copy(other / ADAPTER_FILE, run_dir / ADAPTER_FILE)
    return run_dir


@pytest.mark.parametrize(
    "argv",
    [
        lambda run, image: ["eval", run],
        lambda run, image: ["predict", run, image],
        lambda run, image: ["export", run, "--format", "pt"],
        lambda run, image: ["export", run, "--format", "onnx"],
        lambda run, image: ["export", run, "--format", "timm"],
        lambda run, image: ["predict", "--adapters", f"{run}/{ADAPTER_FILE}", image],
    ],
    ids=["eval", "predict", "export-pt", "export-onnx", "export-timm", "predict-adapters"],
)
def test_adapter_file_of_another_task(argv, swapped_task, data, capsys):
    image = str(next((data["folder"] / "test" / "class_1").glob("*.png")))
    before = {p: p.read_bytes() for p in swapped_task.iterdir()}
    names = _snapshot(data["root"])
    capsys.readouterr()
    code = main(argv(str(swapped_task), image))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert re.search(
        r"^error: adaptertune_weights.safetensors was trained on imagefolder at '.*two_classes' \(2 classes: "
        r"first, rest\) but run folder '.*swapped_task' is imagefolder at '.*folder' \(3 classes: class_0, class_1, "
        r"class_2\); put the run's own adapter file back",
        err,
    ), err
    assert _snapshot(data["root"]) == names  # nothing written
    assert {p: p.read_bytes() for p in swapped_task.iterdir()} == before  # nothing lost


# issue 27: unreadable images are skipped, counted per split on the console and named in the run folder
@pytest.fixture(scope="module")
def unreadable(data):
    """A 3-class folder with a zero-byte PNG and a text file named .png in train, a truncated JPEG in test."""
    import io

    root = make_image_folder(data["root"] / "unreadable", n_classes=3, n_train=4, n_test=2, size=36)
    (root / "train" / "class_0" / "empty.png").write_bytes(b"")
    (root / "train" / "class_2" / "text.png").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 36, 3), np.uint8)).save(buf, "JPEG")
    (root / "test" / "class_1" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return root


def _skipped_lines(run_dir: Path) -> list[list[str]]:
    return [line.split("\t") for line in (run_dir / "skipped.txt").read_text().splitlines()]


@pytest.mark.parametrize(
    "extra",
    [[], ["--cache", "CACHE"], ["--method", "linear-probe-cached"]],
    ids=["per-image", "data-cache", "cached-features"],
)
def test_unreadable_images_are_counted_and_named(extra, unreadable, tmp_path, capsys):
    import json

    run_dir = tmp_path / "run"
    extra = [str(tmp_path / "cache") if a == "CACHE" else a for a in extra]
    capsys.readouterr()
    assert main(["train", *TINY_VIT_ARGS, "--data-root", str(unreadable), *FAST, *extra,
                 "--out-dir", str(run_dir)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err
    counts = json.loads((run_dir / "summary.json").read_text())["unreadable_images"]
    assert counts["test"] == 1 and counts.get("train", 0) + counts.get("val", 0) == 2, counts
    per_split = ", ".join(f"{s} {counts[s]}" for s in ("train", "val", "test") if counts.get(s))
    assert f"skipped 3 unreadable images ({per_split}): see {run_dir / 'skipped.txt'}" in err, err
    lines = _skipped_lines(run_dir)
    assert [(s, Path(p).name) for s, p, _ in lines if s == "test"] == [("test", "cut.jpg")]
    assert sorted(Path(p).name for s, p, _ in lines if s != "test") == ["empty.png", "text.png"]
    assert all(reason for *_, reason in lines), lines

    before = (run_dir / "skipped.txt").read_text()
    assert main(["eval", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert f"skipped 1 unreadable image (test 1): see {run_dir / 'skipped.txt'}" in err, err
    assert (run_dir / "skipped.txt").read_text() == before  # eval's test lines are the run's: nothing lost


def test_a_run_without_unreadable_images_has_no_skipped_file(data, capsys):
    assert not (data["run"] / "skipped.txt").exists()
    capsys.readouterr()
    assert main(["eval", str(data["run"])]) == 0
    assert "unreadable" not in capsys.readouterr().err
    assert not (data["run"] / "skipped.txt").exists()
