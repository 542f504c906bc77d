import pytest
import torch

from adaptertune import BackboneConfig, CheckpointError, WeightsUnavailableError, create_backbone
from adaptertune.backbones import weights_sha256
from helpers import TINY_VIT, TINY_VIT_TIMM


def test_random_init_is_seeded_and_hashed():
    cfg = BackboneConfig(**TINY_VIT)
    a, b = create_backbone(cfg, 10, seed=0), create_backbone(cfg, 10, seed=0)
    assert a.weights_sha256 == b.weights_sha256 and a.weights_tag == "random-init(seed=0)"
    assert create_backbone(cfg, 10, seed=1).weights_sha256 != a.weights_sha256
    assert a.data_config["input_size"] == (3, 32, 32)


def test_pretrained_offline_is_clear_error_never_random():
    # the tiny ViT by its timm name, which has hub weights (offline: none to load), then the registered test_vit,
    # which has none at all
    with pytest.raises(WeightsUnavailableError, match="--weights FILE"):
        create_backbone(BackboneConfig(name=TINY_VIT_TIMM["name"], args=TINY_VIT_TIMM["args"]), 10)
    with pytest.raises(WeightsUnavailableError, match="There are no pretrained weights for 'test_vit'"):
        create_backbone(BackboneConfig(name="test_vit"), 10)


def test_weights_file_loads_strictly_head_replaced(tiny_vit, tmp_path):
    from safetensors.torch import save_file

    src = tiny_vit(num_classes=1000, seed=3)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    torch.save(src.state_dict(), tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        built = create_backbone(BackboneConfig(name="test_vit", weights=str(tmp_path / f)), 5)
        assert built.weights_sha256 == weights_sha256(src)
        assert built.model.head.weight.shape == (5, 192)
        assert torch.equal(built.model.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)


def test_foreign_weights_file_is_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"conv1.weight": torch.zeros(3, 3)}, tmp_path / "resnet.safetensors")
    with pytest.raises(CheckpointError, match="another architecture"):
        create_backbone(BackboneConfig(name="test_vit", weights=str(tmp_path / "resnet.safetensors")), 5)
    (tmp_path / "trunc.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="Cannot read weights file"):
        create_backbone(BackboneConfig(name="test_vit", weights=str(tmp_path / "trunc.safetensors")), 5)


def test_pickled_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="Cannot read weights file"):
        create_backbone(BackboneConfig(name="test_vit", weights=str(tmp_path / "evil.pth")), 5)


def test_random_init_body_does_not_depend_on_class_count():
    """Tasks with different class counts can share one random-init backbone (same seed, same body)."""
    cfg = BackboneConfig(**TINY_VIT)
    a, b = create_backbone(cfg, num_classes=3, seed=5), create_backbone(cfg, num_classes=7, seed=5)
    assert a.weights_sha256 == b.weights_sha256
    body = {k: v for k, v in a.model.state_dict().items() if not k.startswith("head.")}
    for k, v in body.items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.model.head.weight.shape == (3, a.model.embed_dim) and b.model.head.weight.shape == (7, b.model.embed_dim)
    assert float(a.model.head.weight.std()) < 0.05 and not a.model.head.bias.any()  # timm's ViT head init
