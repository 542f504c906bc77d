"""The adapter file (runs/adapter_file.py) holds only what was trained; rebuild is exact; a file for another model is a
clear error."""

import io

import pytest
import torch
import yaml

from adaptertune.errors import CheckpointError
from adaptertune.methods import METHODS
from adaptertune.methods.adapter import AdapterConfig
from adaptertune.runs import load_run
from adaptertune.runs.adapter_file import check_adapter_file, read_adapter_file
from helpers import TINY_VIT_TIMM

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("method", "adapter"),
    [
        ("adapter", {"rank": 4, "placement": "every:3"}),
        ("lora", {"rank": 4}),
        ("parallel", {"rank": 2}),
        ("bitfit", None),
    ],
)
def test_round_trip_is_exact_and_file_holds_only_trained_tensors(tiny_run, tmp_path, method, adapter):
    # the timm name and kwargs: the file records both
    run_dir, model = tiny_run(tmp_path / method, method, adapter, backbone=TINY_VIT_TIMM)
    tensors, meta = read_adapter_file(run_dir / "adaptertune_weights.safetensors")
    assert set(tensors) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert meta["method"] == method and meta["classes"] == ["c0", "c1", "c2", "c3"]
    for key in ("backbone", "backbone_args", "weights_tag", "weights_sha256", "data_config", "width"):
        assert meta[key], key
    if adapter:
        assert meta["options"]["rank"] == adapter["rank"] and meta["options"].get("init", "zero") == "zero"
        assert set(meta["options"]) == set(METHODS.get(method).option_names())  # its own options, no others
        assert "adapter" not in meta  # the legacy key: files written before per-method options sections
    loaded = load_run(run_dir, device="cpu")
    with torch.no_grad():
        assert torch.equal(loaded.model(X), model(X))


@pytest.mark.parametrize(
    ("change", "side_a", "side_b"),
    [
        # another timm architecture of the same geometry (32 px, patch 4): only the names tell them apart
        (
            {"backbone": {**TINY_VIT_TIMM, "name": "deit_tiny_patch16_224"}},
            "deit_tiny_patch16_224",
            "vit_tiny_patch16_224",
        ),
        ({"seed": 1}, "backbone weights", "tag random-init(seed=1)"),
        ({"method": "parallel"}, "'parallel'", "'adapter'"),
        ({"adapter": {"rank": 8}}, "8", "4"),
    ],
)
def test_file_for_another_model_names_both_sides(tiny_run, tmp_path, change, side_a, side_b):
    base = {"method": "adapter", "adapter": {"rank": 4}, "seed": 0, "backbone": TINY_VIT_TIMM}  # by its timm name
    run_dir, _ = tiny_run(tmp_path / "a", **base)
    other = {**base, **change}
    other_dir, _ = tiny_run(tmp_path / "b", **other)
    weights = "adaptertune_weights.safetensors"
    (run_dir / weights).write_bytes((other_dir / weights).read_bytes())
    with pytest.raises(CheckpointError) as e:
        load_run(run_dir, device="cpu")
    msg = str(e.value)
    assert side_a in msg and side_b in msg and "adaptertune_weights.safetensors" in msg


def test_check_reports_the_differing_field():
    meta = {"backbone": "a", "weights_sha256": "0" * 64, "method": "lora", "adapter": {"rank": 4}, "width": 192}
    with pytest.raises(CheckpointError, match=r"option `lora.rank` differs: the file has 4, the model has 16"):
        check_adapter_file(meta, {**meta, "adapter": {"rank": 16}}, "f.safetensors")  # files from before: `adapter`
    new = {**meta, "options": {"rank": 4, "targets": "qkv"}}
    new.pop("adapter")
    check_adapter_file(new, meta, "f.safetensors")  # an old file's options, defaults filled, equal a new one's
    with pytest.raises(
        CheckpointError, match=r"option `lora.targets` differs: the file has 'qkv', the model has 'qkv\+mlp'"
    ):
        check_adapter_file(new, {**new, "options": {"rank": 4, "targets": "qkv+mlp"}}, "f.safetensors")


def test_identity_is_the_methods_own_fields():
    """A method's identity (Method.identity) decides what a file must match: a prompt count that differs is a
    one-line error naming both values, an option the method leaves out of its identity is not compared."""
    import dataclasses as dc

    from adaptertune.methods import Method, register_method, unregister_method

    @dc.dataclass
    class PromptOptions:
        prompts: int = 10
        log_every: int = 1  # not part of what trains

    class Prompts(Method):
        name, description, options = "toy_prompts", "test", PromptOptions

        def identity(self, options):
            return {"prompts": options.prompts}

    register_method(Prompts())
    try:
        meta = {"backbone": "a", "weights_sha256": "0", "method": "toy_prompts", "options": {"prompts": 10}}
        check_adapter_file(meta, {**meta, "options": {"prompts": 10, "log_every": 5}}, "f.safetensors")
        with pytest.raises(
            CheckpointError, match=r"option `toy_prompts.prompts` differs: the file has 10, the model has 50"
        ) as e:
            check_adapter_file(meta, {**meta, "options": {"prompts": 50}}, "f.safetensors")
        assert "\n" not in str(e.value)
    finally:
        unregister_method("toy_prompts")


def test_not_an_adapter_file(tmp_path):
    from adaptertune.engine import save_tensors

    save_tensors(tmp_path / "x.safetensors", {"w": torch.zeros(1)}, {"foo": 1})
    with pytest.raises(CheckpointError, match="not an adaptertune adapter file"):
        read_adapter_file(tmp_path / "x.safetensors")


def _safetensors_bytes(sd):
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in sd.items()}))


@pytest.mark.parametrize("method", ["adapter", "lora"])
def test_r16_file_is_under_two_percent_of_vit_s(method):
    import timm

    from adaptertune.methods import build_method

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=100)
    full = _safetensors_bytes(model.state_dict())
    build_method(method, model, AdapterConfig(rank=16))
    trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    size = _safetensors_bytes(trained)
    assert size / full < 0.02, (method, size, full)
    assert 80e6 < full < 90e6  # ViT-S/16 at 224: ~21.7M fp32 parameters


def test_summary_records_the_file_size(run_config, image_folder, tmp_path):
    """Covered end to end in test_cli; here: the run folder's file is what the summary states."""
    from adaptertune.runs import run

    cfg = run_config(
        image_folder, tmp_path / "r", "lora", adapter={"rank": 2}, data={"subset": 8}, epochs=1, batch_size=8
    )
    s = run(cfg)
    assert s.adapter_file_bytes == (tmp_path / "r" / "adaptertune_weights.safetensors").stat().st_size
    assert yaml.safe_load(io.StringIO((tmp_path / "r" / "config.yaml").read_text()))["lora"]["targets"] == "qkv"


def test_old_adapter_file_with_options_the_method_lacks_still_loads(tiny_run, tmp_path):
    """Files written when every method's options were recorded carry `targets: qkv` for `adapter`; the identity
    compares only the options the method has."""
    from adaptertune.engine import load_tensors, save_tensors

    run_dir, model = tiny_run(tmp_path / "old", "adapter", {"rank": 4})
    tensors, meta = load_tensors(run_dir / "adaptertune_weights.safetensors")
    meta["adapter"] = meta.pop("options")  # as files written before per-method options sections
    meta["adapter"]["targets"] = "qkv"
    save_tensors(run_dir / "adaptertune_weights.safetensors", tensors, meta)
    with torch.no_grad():
        assert torch.equal(load_run(run_dir, device="cpu").model(X), model(X))
    meta["adapter"]["rank"] = 8  # an option the method has still counts
    save_tensors(run_dir / "adaptertune_weights.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="option `adapter.rank` differs"):
        load_run(run_dir, device="cpu")


def test_run_folder_with_the_old_file_name_still_loads(tiny_run, tmp_path):
    from adaptertune.multitask import MultiTaskModel
    from adaptertune.runs import ADAPTER_FILE

    run_dir, model = tiny_run(tmp_path / "pets", "adapter", {"rank": 4})
    assert ADAPTER_FILE == "adaptertune_weights.safetensors"  # not AdapterHub's adapter.safetensors
    (run_dir / ADAPTER_FILE).rename(run_dir / "adapter.safetensors")
    with torch.no_grad():
        assert torch.equal(load_run(run_dir, device="cpu").model(X), model(X))
    mt = MultiTaskModel.from_files([run_dir / "adapter.safetensors"])
    assert list(mt.tasks) == ["pets"]


@pytest.mark.parametrize("what", ["missing", "incomplete"])
def test_model_is_rebuilt_from_the_adapter_files_metadata_without_config_yaml(tiny_run, tmp_path, caplog, what):
    """No config.yaml (or one without backbone/method): the backbone, method and options come from the adapter
    file's own metadata, exactly, and the warning says so; eval, which needs the data section, is a clear error."""
    from adaptertune.runs import evaluate_run

    run_dir, model = tiny_run(tmp_path / what, "adapter", {"rank": 4, "placement": "every:3"})
    config = run_dir / "config.yaml"
    if what == "missing":
        config.unlink()
    else:
        d = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({k: v for k, v in d.items() if k not in ("backbone", "method")}))
    with caplog.at_level("WARNING"):
        loaded = load_run(run_dir, device="cpu")
    assert "adapter file's metadata" in loaded.config_source and "rebuilt from" in caplog.text
    options = loaded.config.to_dict()["adapter"]  # method `adapter`: its own section
    assert options["rank"] == 4 and options["placement"] == "every:3"
    with torch.no_grad():
        assert torch.equal(loaded.model(X), model(X))
    if what == "missing":
        with pytest.raises(CheckpointError, match="no config.yaml: eval needs its data section"):
            evaluate_run(run_dir, device="cpu")
