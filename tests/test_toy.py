"""The 2-D toy: data generators, determinism per seed, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptertune.analysis.toy import make_circles, make_moons, run_toy
from adaptertune.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_moons_and_circles_shapes_balance_and_geometry():
    x, y = make_moons(2000, 0.0, np.random.default_rng(0))
    assert x.shape == (2000, 2) and x.dtype == np.float32 and np.bincount(y).tolist() == [1000, 1000]
    assert np.allclose(np.linalg.norm(x[y == 0], axis=1), 1.0, atol=1e-6)  # upper moon: unit half circle
    x, y = make_circles(1001, 0.0, 0.5, np.random.default_rng(0))
    r = np.linalg.norm(x, axis=1)
    assert np.allclose(r[y == 0], 1.0, atol=1e-6) and np.allclose(r[y == 1], 0.5, atol=1e-6)
    a, _ = make_circles(50, 0.1, 0.5, np.random.default_rng(3))
    b, _ = make_circles(50, 0.1, 0.5, np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_toy_is_deterministic_per_seed_and_seeds_differ():
    r1 = run_toy(ranks=(1, 4, 8), seeds=(0, 1), steps=30, n_boot=10)
    r2 = run_toy(ranks=(1, 4, 8), seeds=(0, 1), steps=30, n_boot=10)
    assert r1.rows == r2.rows and r1.moons_train_acc == r2.moons_train_acc
    assert [row["rank"] for row in r1.rows[:4]] == [0, 1, 4, 8]  # head only first
    accs = {(row["seed"], row["rank"]): row["test_acc"] for row in r1.rows}
    assert any(accs[(0, r)] != accs[(1, r)] for r in (0, 1, 4, 8))
    assert all(0 <= a <= 100 for a in accs.values())
    assert [t["rank"] for t in r1.table()] == [0, 1, 4, 8]


def test_toy_rejects_bad_ranks():
    with pytest.raises(ConfigError, match="1..32"):
        run_toy(ranks=(64,), seeds=(0,), steps=1)


def test_cli_toy(tmp_path, capsys):
    from adaptertune.cli.main import main

    out = tmp_path / "toy"
    assert main(["toy", "--ranks", "1,2,4", "--seeds", "2", "--steps", "20", "--boot", "50", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "head only" in text and "elbow" in text
    assert "not a re-run of the reference toy script" in text and "GELU here" in text and "standardises" in text
    d = json.loads((out / "toy.json").read_text())
    assert [t["rank"] for t in d["table"]] == [0, 1, 2, 4] and len(d["rows"]) == 8
    diffs = d["setup"]["differences_from_reference_code"]
    assert len(diffs) == 5 and any("full-batch" in x for x in diffs) and any("split" in x for x in diffs)
    assert (out / "toy.png").stat().st_size > 1000
    assert main(["toy", "--ranks", "1,x"]) == 2
