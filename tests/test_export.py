"""Export: standalone .pt (torch.export) and ONNX files reproduce the trained model's logits."""

import json

import pytest
import torch

from adaptertune.cli import main
from adaptertune.errors import ConfigError
from adaptertune.export import export_run
from adaptertune.runs import load_run

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_onnx_export_of_lora_is_merged_and_matches(tiny_run, tmp_path):
    import onnx
    import onnxruntime as ort

    run_dir, model = tiny_run(tmp_path / "lora", "lora", {"rank": 4, "targets": "qkv+mlp"})
    r = export_run(run_dir, "onnx")
    assert r.merged and r.max_abs_diff <= 1e-4
    graph = onnx.load(r.path).graph
    assert not any("lora" in t.name for t in graph.initializer)  # LoRA folded into the base weights
    sess = ort.InferenceSession(r.path, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(["logits"], {"images": X.numpy()})[0])  # another batch size than the check's
    with torch.no_grad():
        torch.testing.assert_close(got, model(X), rtol=0, atol=1e-4)
    assert json.loads(open(r.sidecar).read())["classes"] == ["c0", "c1", "c2", "c3"]


def test_pt_export_of_parallel_adapters_matches(tiny_run, tmp_path):
    run_dir, _ = tiny_run(tmp_path / "par", "parallel", {"rank": 4})
    assert main(["export", str(run_dir), "--format", "pt"]) == 0
    program = torch.export.load(str(run_dir / "model.pt")).module()
    with torch.no_grad():
        torch.testing.assert_close(program(X), load_run(run_dir, device="cpu").model(X), rtol=0, atol=1e-4)


def test_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="Unknown export format 'tflite'"):
        export_run(tmp_path, "tflite")
