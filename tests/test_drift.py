"""Linear CKA and the drift measurement."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from adaptertune.analysis.drift import linear_cka, measure_drift, relative_change
from adaptertune.errors import ConfigError
from adaptertune.methods.adapter import AdapterConfig
from helpers import TINY_VIT_ARGS

pytestmark = pytest.mark.usefixtures("one_thread")


def _x(n=50, p=8, seed=0):
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_identity_orthogonal_and_scale_invariance():
    x = _x()
    q, _ = torch.linalg.qr(_x(8, 8, seed=1))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 2.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-10)  # centring removes the shift


def test_cka_detects_different_features_and_is_symmetric():
    x, y = _x(200, 8, 0), _x(200, 8, 2)
    assert linear_cka(x, y) < 0.2
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert linear_cka(x, x[:, :4]) < 1.0  # dropping directions is a change
    with pytest.raises(ConfigError, match="same n"):
        linear_cka(x, y[:10])


def _hsic_u_statistic(x, y):
    """Song et al.'s unbiased HSIC by its definition: the U-statistic over all ordered 4-tuples of distinct rows."""
    k, l_ = (x @ x.T).tolist(), (y @ y.T).tolist()  # python floats: fast scalar indexing
    n, total = len(x), 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        for t, u, v, w in itertools.permutations((i, j, q, r)):
            total += k[t][u] * l_[t][u] + k[t][u] * l_[v][w] - 2 * k[t][u] * l_[t][v]
    return total / 24 / math.perm(n, 4)


def test_unbiased_cka_is_the_u_statistic_by_brute_force():
    x, y = _x(6, 3, 5), _x(6, 2, 6)
    want = _hsic_u_statistic(x, y) / math.sqrt(_hsic_u_statistic(x, x) * _hsic_u_statistic(y, y))
    assert linear_cka(x, y) == pytest.approx(float(want), rel=1e-9)


def test_independent_features_give_cka_about_zero_unbiased_but_not_plug_in():
    """n = 64 probe images, width 384 (ViT-S): the plug-in estimator reads ~0.86 for unrelated features."""
    plug_in, unbiased = [], []
    for seed in range(5):
        x, y = _x(64, 384, 2 * seed), _x(64, 384, 2 * seed + 1)
        plug_in.append(linear_cka(x, y, unbiased=False))
        unbiased.append(linear_cka(x, y))
    assert all(0.83 < c < 0.88 for c in plug_in)
    assert all(abs(c) < 0.1 for c in unbiased) and abs(sum(unbiased) / 5) < 0.03
    assert linear_cka(_x(512, 384, 0), _x(512, 384, 1)) == pytest.approx(0.0, abs=0.01)
    assert linear_cka(_x(512, 384, 0), _x(512, 384, 1), unbiased=False) > 0.4  # 512 images alone are not enough
    with pytest.raises(ConfigError, match="n >= 4"):
        linear_cka(_x(3), _x(3))


def test_relative_change():
    x = _x()
    assert relative_change(x, x) == 0.0
    assert relative_change(x, 1.5 * x) == pytest.approx(0.5)


@pytest.mark.parametrize("init", ["zero", "random"])
def test_drift_zero_init_starts_at_the_pretrained_features(tiny_vit, init):
    base = tiny_vit(num_classes=3)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(3)]
    probe = torch.randn(6, 3, 32, 32, generator=g)
    cfg = AdapterConfig(rank=4, init=init, placement="last:2")
    curve = measure_drift(lambda: __import__("copy").deepcopy(base), batches, probe, cfg, lr=1e-2, every=2)
    assert curve.steps == [0, 2, 3] and len(curve.losses) == 3 and len(curve.cka) == 3
    if init == "zero":
        assert curve.cka[0] == pytest.approx(1.0, abs=1e-9) and curve.rel_change[0] == 0.0
        assert curve.rel_change[-1] > 0  # it does train
    else:
        assert curve.rel_change[0] > 1e-3


def test_cli_drift_writes_json_and_png(image_folder, tmp_path, capsys):
    from adaptertune.cli.main import main

    argv = ["drift", *TINY_VIT_ARGS, "--dataset", "imagefolder", "--data-root"]
    argv += [str(image_folder), "--rank", "2", "--placement", "last:1", "--steps", "2", "--every", "1"]
    argv += ["--batch-size", "4", "--probe", "4", "--out", str(tmp_path / "d"), "--inits", "zero,random"]
    assert main(argv) == 0
    d = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert [c["init"] for c in d["curves"]] == ["zero", "random"] and d["setup"]["steps"] == 2
    assert (tmp_path / "d" / "drift.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "CKA step 0" in out and "removes the drift at step 0 only" in out and "does not stop later drift" in out
    assert d["setup"]["zero_init"].startswith("Zero init removes the drift at step 0 only")
    assert main([*argv[:-1], "zero,bogus"]) == 2
