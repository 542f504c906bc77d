"""End-to-end CLI runs on the tiny ViT and a generated ImageFolder, and one ``--json FILE|-`` on every command that
has it: FILE gets the JSON, ``-`` puts it alone on stdout (the tables go to stderr)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adaptertune.cli import main
from helpers import TINY_VIT_ARGS, TINY_VIT_TIMM, backbone_flags


def train(folder, out, *extra):
    args = [
        "train",
        *TINY_VIT_ARGS,
        "--dataset",
        "imagefolder",
        "--data-root",
        str(folder),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--seed",
        "0",
        "--num-workers",
        "0",
        "--quiet",
        "--out-dir",
        str(out),
        *extra,
    ]
    return main(args)


@pytest.fixture(scope="module")
def demo_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    assert train(image_folder, out, "--method", "adapter", "--rank", "16") == 0
    return out


def test_train_writes_complete_run_dir(demo_run):
    assert {"config.yaml", "metrics.jsonl", "summary.json", "adaptertune_weights.safetensors"} <= {
        p.name for p in demo_run.iterdir()
    }
    s = json.loads((demo_run / "summary.json").read_text())
    for key in (
        "method",
        "backbone",
        "dataset",
        "rank",
        "placement",
        "seed",
        "test_acc",
        "test_acc_last",
        "best_val_acc",
        "best_epoch",
        "trainable_params",
        "total_params",
        "train_seconds",
        "train_images_per_second",
        "peak_memory_mb",
        "versions",
        "weights_sha256",
        "protocol",
    ):
        assert s[key] is not None, key
    assert s["status"] == "success" and s["method"] == "adapter" and s["rank"] == 16
    assert s["trainable_params"] == 12 * (2 * 192 * 16 + 16 + 192) + 192 * 4 + 4
    assert {"torch", "timm", "adaptertune"} <= set(s["versions"])
    lines = (demo_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "val_acc" in json.loads(lines[0])


def test_eval_reproduces_test_accuracy_exactly(demo_run, capsys):
    from adaptertune import evaluate_run

    r = evaluate_run(demo_run, device="cpu")
    assert r["test_acc"] == r["recorded_test_acc"]
    assert main(["eval", str(demo_run)]) == 0
    assert "test_acc" in capsys.readouterr().out


def test_predict_returns_classes(demo_run, image_folder, capsys):
    img = next((image_folder / "test" / "class_2").iterdir())
    assert main(["predict", str(demo_run), str(img), "--topk", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(img) and len(out) == 3 and all("class_" in line for line in out[1:])


def test_same_seed_same_metrics(image_folder, tmp_path):
    for name in ("a", "b"):
        assert train(image_folder, tmp_path / name, "--method", "adapter", "--rank", "4", "--epochs", "2") == 0
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("a", "b"))
    ma, mb = ((tmp_path / n / "metrics.jsonl").read_text() for n in ("a", "b"))
    strip = ("train_seconds", "train_images_per_second", "peak_memory_mb")
    assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
    drop = lambda t: [{k: v for k, v in json.loads(x).items() if "second" not in k} for x in t.splitlines()]  # noqa: E731
    assert drop(ma) == drop(mb)
    assert (tmp_path / "a" / "adaptertune_weights.safetensors").read_bytes() == (
        tmp_path / "b" / "adaptertune_weights.safetensors"
    ).read_bytes()


@pytest.mark.parametrize("method", ["head", "full"])
def test_other_methods_run(image_folder, tmp_path, method):
    assert train(image_folder, tmp_path / method, "--method", method) == 0
    s = json.loads((tmp_path / method / "summary.json").read_text())
    assert s["rank"] is None and s["method"] == method
    assert s["trainable_params"] == (192 * 4 + 4 if method == "head" else s["total_params"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--backbone", "vit_nonexistent"], "Unknown backbone 'vit_nonexistent'"),
        (["--method", "adaptr"], "Unknown method 'adaptr'. Did you mean 'adapter'"),
        (["--rank", "0"], "`adapter.rank` must be an integer >= 1, got 0"),
        (["--rank", "1000"], "larger than the backbone width 192"),
        (["--placement", "middle"], "Unknown placement 'middle'"),
        (["--lr", "-1"], "`train.lr` must be > 0"),
        (["--method", "head", "--rank", "8"], "Method 'head' takes no adapter options"),
        (["train.lrr=1"], "Unknown config key 'train.lrr'"),
        (["--data-root", "/nonexistent/dir"], "Data root '/nonexistent/dir' does not exist"),
        # the tiny ViT by its timm name, which has hub weights (none offline)
        (
            [*backbone_flags(TINY_VIT_TIMM), "--pretrained"],
            "Cannot load pretrained weights for 'vit_tiny_patch16_224'",
        ),
        (["--weights", "/no/such/file.safetensors"], "Weights file '/no/such/file.safetensors' does not exist"),
    ],
)
def test_bad_input_one_line_no_partial_dir(image_folder, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert train(image_folder, out, "--method", "adapter", *args) == 2  # later flags win
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_existing_run_is_not_overwritten(demo_run, image_folder, capsys):
    before = (demo_run / "summary.json").read_bytes()
    assert train(image_folder, demo_run, "--method", "head") == 2
    assert "not empty" in capsys.readouterr().err
    assert (demo_run / "summary.json").read_bytes() == before


def test_console_script_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "adaptertune", "list", "methods"], capture_output=True, text=True)
    assert r.returncode == 0 and "adapter" in r.stdout
    r = subprocess.run([sys.executable, "-m", "adaptertune", "eval", "/no/run"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_readme_examples_run(image_folder, tmp_path):
    """The README's Python example and CLI example, run as written (with the data path substituted)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    py = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(py, "README.md", "exec"), {})
    cli = readme.split("<!-- cli-example -->\n```bash\n", 1)[1].split("```", 1)[0]
    cmds = [c.strip() for c in cli.replace("\\\n", " ").splitlines() if c.strip().startswith("adaptertune")]
    assert len(cmds) >= 2
    for cmd in cmds:
        cmd = cmd.replace("path/to/images", str(image_folder)).replace("runs/demo", str(tmp_path / "demo"))
        argv = cmd.split()[1:] + (["--num-workers", "0", "--quiet"] if cmd.split()[1] == "train" else [])
        assert main(argv) == 0, cmd


def test_progress_bar_of_a_resumed_run_starts_at_its_step():
    from adaptertune.cli.progress import TqdmProgress

    bar = TqdmProgress()
    bar.on_train_start(total_steps=10, steps_per_epoch=5, start_step=6)
    bar.on_step(6, 0.5, 1e-3)
    assert (bar.bar.n, bar.bar.total) == (7, 10)
    bar.bar.close()


def test_tensorboard_events_mirror_the_metrics(image_folder, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert (
        train(image_folder, out, "--method", "adapter", "--rank", "4", "--epochs", "2", "train.tensorboard=true") == 0
    )
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = events.Scalars("train/loss_step")
    assert [e.step for e in losses] == list(range(1, records[-1]["step"] + 1))
    epoch_acc = events.Scalars("epoch/train_acc")
    assert [(e.step, round(e.value, 4)) for e in epoch_acc] == [(r["step"], round(r["train_acc"], 4)) for r in records]
    # --overwrite starts the curves afresh
    assert train(image_folder, out, "--method", "head", "--epochs", "1", "--overwrite", "train.tensorboard=true") == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(1, steps + 1))
    # the flag does not change the protocol: a run without it lands in the same report cell
    from adaptertune.runs import CELL_FREE_KEYS

    assert "train.tensorboard" in CELL_FREE_KEYS


def test_tensorboard_missing_is_one_line_error_and_no_run_dir(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if tensorboard were not installed
    out = tmp_path / "tb"
    assert train(image_folder, out, "--method", "head", "train.tensorboard=true") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'adaptertune[tensorboard]'" in err[0], err
    assert not out.exists()


# ---------------------------------------------------------------- one --json FILE|- on every command


def test_eval_json_to_stdout_or_file(image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(image_folder, run, "--method", "head") == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "-", "--device", "cpu"]) == 0
    cap = capsys.readouterr()
    r = json.loads(cap.out)
    assert r["test_acc"] == r["recorded_test_acc"] and "recorded_test_acc" in cap.err  # the table went to stderr
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--json", str(out), "--device", "cpu"]) == 0
    assert json.loads(out.read_text()).keys() == r.keys()
    assert "recorded_test_acc" in capsys.readouterr().out  # with a file, the table stays on stdout


def test_every_json_option_is_file_or_stdout():
    from adaptertune.cli import build_parser

    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if "--json" in action.option_strings:
                assert (action.metavar, action.default, action.nargs) == ("FILE|-", None, None), name


def test_speed_json_to_stdout(capsys):
    args = ["speed", *TINY_VIT_ARGS, "--batch-size", "2", "--methods", "head,adapter", "--steps", "1"]
    assert main([*args, "--warmup", "0", "--no-memory", "--no-inference", "--matmul-size", "64", "--json", "-"]) == 0
    cap = capsys.readouterr()
    assert [m["method"] for m in json.loads(cap.out)["methods"]] == ["head", "adapter"]
    assert "x full" in cap.err  # the table went to stderr


def test_advise_rank_json_to_stdout(image_folder, capsys):
    argv = ["advise-rank", *TINY_VIT_ARGS, "--dataset", "imagefolder", "--num-workers"]
    argv += ["0", "--data-root", str(image_folder), "--batches", "1", "--batch-size", "8", "--placement", "last:1"]
    assert main([*argv, "--permutations", "0", "--json", "-"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["blocks"] == [11] and "advised rank:" in cap.err


def test_elbow_json_to_stdout(tmp_path, capsys):
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "seed", "acc"])
        for s in range(3):
            for r in (1, 2, 4, 8, 16):
                w.writerow([r, s, 70 + 3 * min(r, 4) + 0.2 * s + 0.1 * (r % 3)])
    assert main(["elbow", str(path), "--boot", "50", "--json", "-"]) == 0
    cap = capsys.readouterr()
    assert isinstance(json.loads(cap.out), list) and "elbow" in cap.err
