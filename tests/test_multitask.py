"""Many tasks on one backbone: switching is exact; conflicts and foreign files are clear errors."""

import pytest
import torch

from adaptertune.cli import main
from adaptertune.errors import CheckpointError, ConfigError
from adaptertune.multitask import MultiTaskModel, predict_tasks

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def three_tasks(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    specs = {
        "pets": ("adapter", {"rank": 4}),
        "cars": ("adapter", {"rank": 8, "placement": "last:4"}),
        "birds": ("head", None),
        "lora_a": ("lora", {"rank": 4}),
    }
    out = {}
    for name, (method, adapter) in specs.items():
        run_dir, model = tiny_run(root / name, method, adapter, n_classes=4)
        with torch.no_grad():
            out[name] = (run_dir / "adaptertune_weights.safetensors", model(X))
    return out


def test_switching_among_three_sets_is_exact(three_tasks):
    names = ["pets", "cars", "birds"]
    mt = MultiTaskModel.from_files([three_tasks[n][0] for n in names], names=names)
    with torch.no_grad():
        for name in ["birds", "pets", "cars", "pets", "birds", "cars"]:
            mt.set_active(name)
            assert torch.equal(mt(X), three_tasks[name][1]), name


def test_lora_task_next_to_adapter_tasks(three_tasks):
    names = ["lora_a", "pets"]
    mt = MultiTaskModel.from_files([three_tasks[n][0] for n in names], names=names)
    with torch.no_grad():
        for name in ["pets", "lora_a", "pets"]:
            mt.set_active(name)
            assert torch.equal(mt(X), three_tasks[name][1]), name


def test_disable_and_remove(three_tasks):
    mt = MultiTaskModel.from_files([three_tasks["pets"][0], three_tasks["cars"][0]], names=["pets", "cars"])
    mt.disable()
    with torch.no_grad():
        plain = mt(X)
        mt.set_active("pets")
        feats = mt.backbone(X)
    assert plain.shape == (3, 192) and not torch.equal(plain, feats)
    mt.remove_task("cars")
    assert list(mt.tasks) == ["pets"] and "cars" not in mt.heads
    with pytest.raises(ConfigError, match="No task named 'cars'"):
        mt.set_active("cars")
    with torch.no_grad():
        assert torch.equal(mt(X), three_tasks["pets"][1])


def test_serial_and_parallel_cannot_share(tiny_run, three_tasks, tmp_path):
    run_dir, _ = tiny_run(tmp_path / "par", "parallel", {"rank": 2})
    mt = MultiTaskModel.from_files([three_tasks["pets"][0]], names=["pets"])
    with pytest.raises(ConfigError, match=r"Task .par.*holds serial adapter sets.*parallel adapter sets cannot share"):
        mt.add_task("par", run_dir / "adaptertune_weights.safetensors")


def test_file_from_another_backbone_is_refused(tiny_run, three_tasks, tmp_path):
    run_dir, _ = tiny_run(tmp_path / "other", "adapter", {"rank": 4}, seed=3)
    mt = MultiTaskModel.from_files([three_tasks["pets"][0]], names=["pets"])
    with pytest.raises(CheckpointError, match=r"backbone weights \(sha256\) differs.*seed=3.*seed=0"):
        mt.add_task("other", run_dir / "adaptertune_weights.safetensors")


def test_predict_cli_with_adapters(three_tasks, image_folder, capsys):
    img = str(next((image_folder / "test" / "class_0").iterdir()))
    files = [str(three_tasks[n][0]) for n in ("pets", "birds")]
    assert main(["predict", "--topk", "2", "--adapters", *files, img]) == 0
    out = capsys.readouterr().out
    assert "loaded once" in out and out.count("[pets]") == 1 and out.count("[birds]") == 1
    mt = MultiTaskModel.from_files(files)
    r = predict_tasks(mt, [img], topk=2)
    assert [x["task"] for x in r] == ["pets", "birds"] and len(r[0]["top"]) == 2


def test_tasks_with_different_class_counts_share_a_random_init_backbone(tiny_run, tmp_path):
    runs = {n: tiny_run(tmp_path / n, "adapter", {"rank": 4}, n_classes=k) for n, k in (("three", 3), ("seven", 7))}
    mt = MultiTaskModel.from_files([runs[n][0] / "adaptertune_weights.safetensors" for n in runs], names=list(runs))
    with torch.no_grad():
        for name, (_, model) in runs.items():
            mt.set_active(name)
            assert torch.equal(mt(X), model(X)), name
