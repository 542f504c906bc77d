"""Nested ranks (``adapter.nested``, methods/adapter/nested.py): exact start at every rank, the leading units alone
at rank r, the per-step draw and its resume, the rank curve of a run, truncation to a plain rank-r file,
``export`` / ``predict`` at a rank."""

import csv
import json

import pytest
import torch

from adaptertune import AdapterConfig, ConfigError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.adapter import Adapter, adapter_param_count, set_active_rank
from adaptertune.methods.adapter.nested import sample_rank, truncate_tensors
from adaptertune.methods.adapter.options import default_grid
from helpers import TINY_VIT, make_image_folder
from petl_checks import resume_runs

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
NESTED = {"rank": 8, "nested": True}


def adapters(model):
    return [m for m in model.modules() if isinstance(m, Adapter)]


def randomize(model, seed=1):
    """Every trainable tensor moved by seeded noise ("trained"), W_up included."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


# ---------------------------------------------------------------- options
def test_default_grid_is_powers_of_two_and_the_rank():
    assert default_grid(1) == [1]
    assert default_grid(8) == [1, 2, 4, 8]
    assert default_grid(24) == [1, 2, 4, 8, 16, 24]
    assert AdapterConfig(rank=8, nested=True).grid == (1, 2, 4, 8)
    assert AdapterConfig(rank=8, nested=True, nested_ranks="8, 2,2").grid == (2, 8)
    assert AdapterConfig(rank=8).grid == (8,)


@pytest.mark.parametrize(
    "given, match",
    [
        ({"rank": 8, "nested_ranks": [2, 8]}, "needs `adapter.nested: true`"),
        ({"rank": 8, "nested": True, "nested_ranks": [1, 4]}, "must end at `adapter.rank` 8"),
        ({"rank": 8, "nested": True, "nested_ranks": [0, 8]}, "integer >= 1"),
        ({"rank": 8, "nested": True, "nested_ranks": "a,8"}, "must be an integer"),
        ({"rank": 8, "nested": "maybe"}, "`adapter.nested` must be true or false"),
    ],
)
def test_bad_nested_options_are_one_line_errors(given, match):
    with pytest.raises(ConfigError, match=match) as e:
        AdapterConfig(**given)
    assert "\n" not in str(e.value)


def test_nested_off_keeps_the_label_and_the_identity_defaults():
    m = METHODS.get("adapter")
    assert m.label(AdapterConfig(rank=8)) == "adapter r=8"
    assert m.label(AdapterConfig(rank=8, nested=True)) == "adapter r=8 nested=True"
    assert m.eval_ranks(AdapterConfig(rank=8)) == ()
    assert m.eval_ranks(AdapterConfig(rank=8, nested=True)) == (0, 1, 2, 4, 8)


# ---------------------------------------------------------------- the draw
def test_sample_rank_is_a_pure_uniform_draw_of_seed_and_step():
    grid = (1, 2, 4, 8, 16)
    draws = [sample_rank(grid, 3, s) for s in range(5000)]
    assert draws == [sample_rank(grid, 3, s) for s in range(5000)]
    assert draws != [sample_rank(grid, 4, s) for s in range(5000)]
    counts = [draws.count(r) for r in grid]
    assert all(abs(c - 1000) < 4 * 30 for c in counts), counts  # binomial sd ~28


# ---------------------------------------------------------------- forward
@pytest.mark.parametrize("method", ["adapter", "parallel"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_exact_start_at_every_rank(tiny_vit, method, dtype):
    """Zero-init W_up: at every rank of the grid (and in a training step at a sampled rank) the model computes
    the backbone's logits bitwise, fp32 and under bf16 autocast."""
    model = tiny_vit()
    ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.no_grad()
    with ctx:
        base = model(X)
        build_method(method, model, AdapterConfig(rank=8, nested=True))
        model.eval()
        for r in (None, 0, 1, 3, 8):
            set_active_rank(model, r)
            assert torch.equal(model(X), base), r
        model.train()
        for step in range(3):
            for a in adapters(model):
                a.before_train_step(step)
            assert torch.equal(model(X), base), step


@pytest.mark.parametrize("scaling", ["constant", "inverse"])
def test_active_rank_equals_a_plain_adapter_of_that_rank_bitwise(tiny_vit, scaling):
    """At active rank r the nested model computes a plain rank-r model with its leading units bitwise (fp32 and
    bf16 autocast); None is full rank again; 0 is the backbone through the trained head."""
    model = tiny_vit()
    build_method("adapter", model, AdapterConfig(rank=8, nested=True, scaling=scaling, alpha=2.0))
    randomize(model.eval())
    full = model(X)
    for r in (1, 2, 4, 8):
        set_active_rank(model, r)
        plain = tiny_vit()
        build_method("adapter", plain, AdapterConfig(rank=r, scaling=scaling, alpha=2.0))
        small = truncate_tensors({n: p for n, p in model.named_parameters() if p.requires_grad}, r)
        with torch.no_grad():
            for n, p in plain.named_parameters():
                if p.requires_grad:
                    p.copy_(small[n])
        assert torch.equal(model(X), plain.eval()(X)), r
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(X), plain(X)), r
    set_active_rank(model, None)
    assert torch.equal(model(X), full)
    set_active_rank(model, 0)  # head only: the backbone's features through the trained head
    head_only = tiny_vit()
    head_only.head.load_state_dict(model.head.state_dict())
    assert torch.equal(model(X), head_only.eval()(X))


def test_a_step_at_rank_r_trains_only_the_leading_units(tiny_vit):
    """On a training step sampled at r the units >= r get exactly zero gradient and the units < r do not, the
    sampled rank is what the step ran (its loss equals the plain rank-r model's), in the fused path and with
    dropout (the module path)."""
    for dropout in (0.0, 0.1):
        model = tiny_vit()
        build_method("adapter", model, AdapterConfig(rank=8, nested=True, dropout=dropout))
        randomize(model)
        model.train()
        step = next(s for s in range(100) if sample_rank((1, 2, 4, 8), 0, s) == 2)
        for a in adapters(model):
            a.before_train_step(step)
        assert {a.current_rank() for a in adapters(model)} == {2}
        torch.manual_seed(0)
        model(X).logsumexp(-1).sum().backward()
        for a in adapters(model):
            assert torch.all(a.down.weight.grad[2:] == 0) and torch.all(a.down.bias.grad[2:] == 0)
            assert torch.all(a.up.weight.grad[:, 2:] == 0)
            assert a.down.weight.grad[:2].abs().sum() > 0 and a.up.weight.grad[:, :2].abs().sum() > 0
    model.eval()  # outside training the step's rank does not apply: full rank
    assert {a.current_rank() for a in adapters(model)} == {8}


def test_set_active_rank_errors_are_one_line(tiny_vit):
    model = tiny_vit()
    build_method("adapter", model, AdapterConfig(rank=8))
    with pytest.raises(ConfigError, match="no nested adapters"):
        set_active_rank(model, 2)
    build_method("adapter", nested := tiny_vit(), AdapterConfig(rank=8, nested=True))
    for bad in (9, -1, 2.5):
        with pytest.raises(ConfigError, match=r"use 0\.\.8"):
            set_active_rank(nested, bad)


def test_truncated_parameter_count_is_the_formula(tiny_vit):
    model = tiny_vit()
    build_method("adapter", model, AdapterConfig(rank=8, nested=True, placement="last:3"))
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad and ".adapters." in n}
    for r in (1, 2, 4, 8):
        small = truncate_tensors(tensors, r)
        assert sum(v.numel() for v in small.values()) == adapter_param_count(3, 192, r)
    with pytest.raises(ConfigError, match=r"use 1\.\.8"):
        truncate_tensors(tensors, 0)


# ---------------------------------------------------------------- runs
def test_resume_is_bitwise_with_nested_sampling(tmp_path):
    """Stopped after step 5 and resumed from the epoch-1 checkpoint (step 4): the steps after it draw the ranks the
    uninterrupted run drew (a draw counted from the resume would give other ranks, other tensors)."""
    a, b, start = resume_runs(tmp_path, "adapter", NESTED)
    assert start == 4
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.fixture(scope="module")
def nested_runs(tmp_path_factory):
    """Two seeds of a nested rank-8 run on a 4-class ImageFolder (2 epochs, validation split)."""
    from adaptertune.config import RunConfig
    from adaptertune.runs import run

    tmp = tmp_path_factory.mktemp("nested")
    folder = make_image_folder(tmp / "data", n_classes=4, n_train=10, n_test=4)
    out = []
    for seed in (0, 1):
        d = {
            "backbone": TINY_VIT,
            "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0, "val_fraction": 0.25},
            "method": "adapter",
            "adapter": NESTED,
            "train": {"epochs": 2, "seed": seed, "device": "cpu", "batch_size": 8, "lr": 1e-2},
            "out_dir": str(tmp / f"s{seed}"),
        }
        out.append((tmp / f"s{seed}", run(RunConfig.from_dict(d))))
    return out


def test_run_writes_its_rank_curve(nested_runs):
    folder, summary = nested_runs[0]
    rows = list(csv.DictReader((folder / "rank_curve.csv").open()))
    assert [int(r["rank"]) for r in rows] == [0, 1, 2, 4, 8]
    assert {r["nested"] for r in rows} == {"1"} and {r["seed"] for r in rows} == {"0"}
    assert [r["variant"] for r in rows][1:3] == ["adapter r=1 nested=True", "adapter r=2 nested=True"]
    full = rows[-1]
    assert float(full["test_acc"]) == pytest.approx(summary.test_acc, abs=1e-4)  # the selected model at full rank
    assert float(full["val_acc"]) == pytest.approx(summary.best_val_acc, abs=1e-4)
    assert int(full["trainable_params"]) == summary.trainable_params
    head = 192 * 4 + 4
    assert [int(r["trainable_params"]) for r in rows] == [head + adapter_param_count(12, 192, r) * (r > 0) for r in
                                                          (0, 1, 2, 4, 8)]  # fmt: skip


def test_elbow_reads_nested_run_folders(nested_runs, tmp_path, capsys):
    """``adaptertune elbow RUN_DIR...`` reads the runs' rank curves together as one sweep (grouped without the
    rank; their rank 0, adapters off in front of a head trained with them, is not head only and is left out); on
    curves with a known knee it finds it; a folder without a curve and one run alone (no paired seeds) are one-line
    errors."""
    from adaptertune.analysis.elbow_table import elbow_rows, read_rows
    from adaptertune.cli import main
    from adaptertune.runs.rank_curve import rank_curve_path

    rows = [row for f, _ in nested_runs for row in read_rows(rank_curve_path(f))]
    (table,) = elbow_rows(rows, rule="paired", n_boot=20)
    assert table.group == {"dataset": "imagefolder", "backbone": "test_vit", "method": "adapter",
                           "variant": "adapter nested=True"}  # fmt: skip
    folders = []
    for seed in range(3):  # the real curve's columns, accuracies of a knee at rank 4
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        with (folder / "rank_curve.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for row in rows[:5]:
                r = int(row["rank"])
                acc = 99.0 if r == 0 else 70 + 5 * min(r, 4).bit_length() + seed + 0.1 * ((r + seed) % 3)
                w.writerow({**row, "seed": seed, "test_acc": f"{acc:.4f}"})
        folders.append(str(folder))
    out = tmp_path / "elbow.json"
    assert main(["elbow", *folders, "--rule", "paired", "--boot", "50", "--json", str(out)]) == 0
    (group,) = json.loads(out.read_text())
    assert group["ranks"] == [1, 2, 4, 8] and group["elbow"] == 4  # rank 0 (99%, would be the best) left out
    note = "3 nested runs' rank 0 (adapters off in front of a head trained with them) left out"
    assert note in capsys.readouterr().out
    assert main(["elbow", folders[0]]) == 2
    assert "needs >= 2 seeds" in capsys.readouterr().err
    assert main(["elbow", str(tmp_path)]) == 2
    assert "has no rank_curve.csv" in capsys.readouterr().err


def test_truncated_file_loads_into_a_plain_model_equal_to_the_nested_one(nested_runs, tiny_vit, tmp_path):
    from adaptertune.runs import load_run
    from adaptertune.runs.adapter_file import file_identity, read_adapter_file, truncate_adapter_file
    from adaptertune.runs.load import config_for_model

    folder, _ = nested_runs[0]
    nested = load_run(folder, device="cpu")
    for r in (1, 4, 8):
        path = truncate_adapter_file(folder / "adaptertune_weights.safetensors", r, tmp_path / f"r{r}.safetensors")
        tensors, meta = read_adapter_file(path)
        ident = file_identity(meta)["options"]
        assert ident["rank"] == r and ident["nested"] is False and ident["nested_ranks"] is None
        cfg, _ = config_for_model(None, meta)
        from adaptertune.resolve import resolve_run

        _, plain = resolve_run(cfg).build_model(len(meta["classes"]))
        from adaptertune.engine.checkpoint import load_trained_tensors

        load_trained_tensors(plain, tensors, str(path))
        set_active_rank(nested.model, r)
        assert torch.equal(plain.eval()(X), nested.model(X)), r
    with pytest.raises(ConfigError, match=r"use 1\.\.8"):
        truncate_adapter_file(folder / "adaptertune_weights.safetensors", 9, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_export_and_predict_at_a_rank(nested_runs, tmp_path, capsys):
    from adaptertune.cli import main
    from adaptertune.export import export_run
    from adaptertune.runs import load_run, predict

    folder, _ = nested_runs[0]
    nested = load_run(folder, device="cpu")
    set_active_rank(nested.model, 2)
    res = export_run(folder, "pt", tmp_path / "m2.pt", rank=2)
    program = torch.export.load(res.path).module()
    assert torch.allclose(program(X), nested.model(X), atol=1e-5)
    assert json.loads((tmp_path / "m2.pt.json").read_text())["rank"] == 2
    image = next((folder.parent / "data").rglob("*.png"))
    with torch.no_grad():
        top = predict(folder, [image], topk=1, device="cpu", rank=2)[0]["top"][0]
        full = predict(folder, [image], topk=1, device="cpu")[0]["top"][0]
    assert top[1] != full[1] or top == full  # rank 2 is its own model; it may agree on the class
    for bad in ("0", "9"):
        assert main(["predict", str(folder), str(image), "--rank", bad]) == 2
        assert "--rank" in capsys.readouterr().err
    assert main(["export", str(folder), "--rank", "16", "--out", str(tmp_path / "x.pt")]) == 2
    assert "use 1..8" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
