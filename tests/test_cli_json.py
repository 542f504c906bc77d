"""One ``--json FILE|-`` on every command that has it: FILE gets the JSON, ``-`` puts it alone on stdout (the
tables go to stderr)."""

import csv
import json

from adaptertune.cli import main
from test_cli import train


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
    args = ["speed", "--backbone", "test_vit", "--batch-size", "2", "--methods", "head,adapter", "--steps", "1"]
    assert main([*args, "--warmup", "0", "--no-memory", "--no-inference", "--matmul-size", "64", "--json", "-"]) == 0
    cap = capsys.readouterr()
    assert [m["method"] for m in json.loads(cap.out)["methods"]] == ["head", "adapter"]
    assert "x full" in cap.err  # the table went to stderr


def test_advise_rank_json_to_stdout(image_folder, capsys):
    argv = ["advise-rank", "--backbone", "test_vit", "--no-pretrained", "--dataset", "imagefolder", "--num-workers"]
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
