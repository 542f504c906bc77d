"""A method written outside the package (README's plugin example, run as a new user would, through the CLI in
fresh processes): registered by `--plugin` / ADAPTERTUNE_PLUGINS, it trains, sweeps with process workers, is
timed by `speed` with its memory probe, and reports under its own label (issue 24, item 4)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import TINY_VIT, TINY_VIT_ARGS

README = Path(__file__).resolve().parents[1] / "README.md"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def readme_plugin() -> str:
    """The README's plugin example, verbatim (the code between the plugin-example markers)."""
    text = README.read_text()
    block = re.search(r"<!-- plugin-example -->\s*```python\n(.*?)```\s*<!-- /plugin-example -->", text, re.S)
    assert block, "README.md lost its plugin example"
    return block.group(1)


def cli(*argv, env=None, timeout=600):
    base = {k: v for k, v in os.environ.items() if k != "ADAPTERTUNE_PLUGINS"}
    full_env = {**base, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "adaptertune", *argv], capture_output=True, text=True, env=full_env, timeout=timeout
    )


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "my_methods.py"
    path.write_text(readme_plugin())
    return path


def test_listed_with_its_own_options_by_flag_and_by_env(plugin):
    r = cli("--plugin", str(plugin), "list", "methods")
    assert r.returncode == 0, r.stderr
    assert "scaleshift" in r.stdout and "scaleshift.dropout" in r.stdout
    r = cli("list", "methods", env={"ADAPTERTUNE_PLUGINS": str(plugin)})
    assert r.returncode == 0 and "scaleshift" in r.stdout, r.stderr
    assert "scaleshift" not in cli("list", "methods").stdout


def test_a_plugin_that_fails_to_import_is_one_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    r = cli("--plugin", str(bad), "list", "methods")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: Method plugin '{bad}' failed to import: RuntimeError: boom"]
    r = cli("--plugin", "no_such_module_x", "train", "--method", "head")
    assert r.returncode == 2 and "Method plugin 'no_such_module_x' failed to import: ModuleNotFoundError" in r.stderr
    r = cli("list", "methods", env={"ADAPTERTUNE_PLUGINS": str(bad)})
    assert r.returncode == 2 and "failed to import: RuntimeError: boom" in r.stderr and "Traceback" not in r.stderr


def test_train_sweep_with_process_workers_and_report(plugin, image_folder, tmp_path):
    common = ["--dataset", "imagefolder", "--data-root", str(image_folder), "--epochs", "1", "--batch-size", "16"]
    r = cli(
        "--plugin", str(plugin), "train", *TINY_VIT_ARGS, *common, "--num-workers", "0", "--quiet",
        "--method", "scaleshift", "--set", "scaleshift.init=0.5", "--out-dir", str(tmp_path / "one"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load((tmp_path / "one" / "config.yaml").read_text())
    assert config["scaleshift"] == {"init": 0.5, "dropout": 0.1} and "adapter" not in config
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["label"] == "scaleshift init=0.5" and summary["rank"] is None
    assert summary["trainable_params"] == 2 * 192 + 192 * 4 + 4  # scale, shift, head of the tiny ViT (width 192)
    assert cli("--plugin", str(plugin), "eval", str(tmp_path / "one")).returncode == 0

    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "plugin",
                "base": {
                    "backbone": TINY_VIT,
                    "data": {"name": "imagefolder", "root": str(image_folder), "num_workers": 0},
                    "train": {"epochs": 1, "batch_size": 16},
                    "method": "scaleshift",
                    "lora": {"rank": 2},  # another method's section: checked against LoRA's options, unused
                },
                "grid": {"scaleshift.init": [0.5, 1.0]},
            }
        )
    )
    r = cli(
        "--plugin", str(plugin), "sweep", str(spec), "--results-dir", str(tmp_path / "r"), "--workers", "2", "--quiet"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("--plugin", str(plugin), "report", str(tmp_path / "r"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    text = r.stdout + "".join(p.read_text() for p in (tmp_path / "rep").glob("*.md"))
    assert "scaleshift init=0.5" in text and "r=None" not in text
    assert re.search(r"scaleshift(?! init)", text)  # init 1.0 is the default: the bare name


def test_speed_times_it_with_the_memory_probe(plugin, tmp_path):
    out = tmp_path / "speed.json"
    r = cli(
        "--plugin", str(plugin), "speed", *TINY_VIT_ARGS, "--methods", "head,scaleshift", "--batch-size", "2",
        "--steps", "1", "--warmup", "0", "--no-inference", "--set", "scaleshift.dropout=0.0", "--json", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    row = next(m for m in json.loads(out.read_text())["methods"] if m["method"] == "scaleshift")
    assert row["label"] == "scaleshift dropout=0.0" and row["peak_memory_mb"] > 0  # the probe is a child process
    assert "scaleshift dropout=0.0" in r.stdout
