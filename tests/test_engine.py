import math
import sys

import pytest
import torch

from adaptertune import AdapterConfig, add_adapters
from adaptertune.engine import (
    Selection,
    cuda_backend_settings,
    evaluate,
    fit,
    param_groups,
    resolve_precision,
    topk_correct,
    warmup_cosine,
)
from adaptertune.engine import loop as loop_module
from adaptertune.errors import CheckpointError, DataError, NonFiniteLossError


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, total_steps=100, warmup_steps=10, base_lr=1.0, min_lr=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1 / 11)
    assert lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after warm-up
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(0, 10, 0, 2.0) == 2.0  # no warm-up


def test_param_groups_decay_weights_only(tiny_vit):
    model = tiny_vit()
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert "blocks.0.attn.qkv.weight" in decayed and "head.weight" in decayed
    assert {"cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"} <= plain
    assert groups[1]["weight_decay"] == 0.0
    everything = param_groups(model, 0.05, decay_all=True)
    assert len(everything[0]["params"]) == len(list(model.parameters())) and not everything[1]["params"]


def test_param_groups_skip_frozen(tiny_vit):
    model = add_adapters(tiny_vit(), AdapterConfig(rank=2, placement="last:1"))
    n = sum(len(g["params"]) for g in param_groups(model, 0.05))
    assert n == 4 + 2  # adapter down/up weight+bias, head weight+bias


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 0, 0])
    assert topk_correct(logits, targets, (1, 2, 5)) == [1, 2, 3]


# ---------------------------------------------------------------- host syncs, NaN detection, precision
def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))


def _batches(n: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 2, 2, generator=g), torch.randint(0, 3, (4,), generator=g), 0) for _ in range(n)]


LAST = Selection.LAST_EPOCH  # these fits have no validation loader


class _SyncCounter:
    """Counts device-to-host reads (item, tolist, bool/float/int of a tensor, ...) made by adaptertune code."""

    NAMES = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        for name in self.NAMES:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name)))

    def _wrap(self, real):
        def wrapper(t, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("adaptertune"):
                self.count += 1
            return real(t, *args, **kwargs)

        return wrapper


@pytest.mark.parametrize("log_every", [1, 4, 50])
def test_fit_reads_the_device_only_at_log_points(train_config, monkeypatch, log_every):
    data = _batches(12)
    counter = _SyncCounter(monkeypatch)
    fit(_mlp(), data, None, data[:2], train_config(log_every_steps=log_every), torch.device("cpu"), selection=LAST)
    reads = -(-12 // log_every)  # one per log point; the epoch end is the 12th step (a log point or the last)
    # + the test evaluation: its sums are read once for 2 batches, its per-image outputs once (label, pred, prob)
    assert counter.count == reads + 1 + 3


def test_non_finite_loss_found_later_still_names_its_step(train_config, monkeypatch):
    real = loop_module.F.cross_entropy
    calls = [0]

    def cross_entropy(logits, y, **kw):
        loss = real(logits, y, **kw)
        if kw.get("reduction", "mean") == "mean":
            calls[0] += 1
            if calls[0] == 3:  # step 2
                return loss * float("inf")
        return loss

    monkeypatch.setattr(loop_module.F, "cross_entropy", cross_entropy)
    seen = []

    class Steps:
        def on_train_start(self, *a):
            pass

        def on_step(self, step, loss, lr):
            seen.append(step)

        def on_epoch_end(self, metrics):
            pass

    with pytest.raises(NonFiniteLossError, match=r"Loss became inf at step 2 \(epoch 1\).*checked at step 5"):
        cfg = train_config(log_every_steps=5)
        fit(_mlp(), _batches(8), None, _batches(1), cfg, torch.device("cpu"), [Steps()], selection=LAST)
    assert seen == [0, 1]  # the steps before the bad one reach the callbacks, none after it


def test_evaluate_sums_on_device_match_a_direct_count():
    model, data = _mlp(), _batches(3, seed=1)
    got = evaluate(model, data, torch.device("cpu"))
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _, _ in data]).float()
    y = torch.cat([y for _, y, _ in data])
    assert got["n"] == 12 and got["acc"] == 100.0 * topk_correct(logits, y, (1,))[0] / 12
    assert got["top5"] == 100.0  # 3 classes
    assert got["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-6)


def test_auto_precision_and_cuda_settings(monkeypatch):
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    for supported, want in ((True, "bf16"), (False, "fp16")):  # V100 / T4: no bf16 -> fp16 with a GradScaler
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert resolve_precision("auto", torch.device("cuda")) == want
    with cuda_backend_settings(torch.device("cpu")) as settings:
        assert settings == {}
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    with cuda_backend_settings(torch.device("cuda")) as settings:
        assert settings == {"matmul_tf32": True, "cudnn_tf32": True, "cudnn_benchmark": True}
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark) == before


def test_resume_in_another_precision_is_refused(train_config, tmp_path):
    ckpt = tmp_path / "checkpoint.safetensors"
    fit(
        _mlp(),
        _batches(2),
        None,
        _batches(1),
        train_config(epochs=2),
        torch.device("cpu"),
        checkpoint_path=ckpt,
        selection=LAST,
    )
    with pytest.raises(CheckpointError, match="trained in fp32, this run would continue in bf16"):
        fit(
            _mlp(),
            _batches(2),
            None,
            _batches(1),
            train_config(epochs=3, precision="bf16"),
            torch.device("cpu"),
            checkpoint_path=ckpt,
            resume=True,
            selection=LAST,
        )


def test_stand_in_batch_for_an_all_corrupt_first_batch(tiny_vit):
    from adaptertune.engine.epoch import _stand_in_batch

    assert _stand_in_batch(tiny_vit(), None, torch.device("cpu")).shape == (1, 3, 32, 32)
    assert _stand_in_batch(_mlp(), torch.Size((3, 2, 2)), torch.device("cpu")).shape == (1, 3, 2, 2)
    with pytest.raises(DataError, match="first batch is corrupt"):
        _stand_in_batch(_mlp(), None, torch.device("cpu"))


def test_the_loop_steps_run_one_by_one(train_config, tmp_path):
    from adaptertune.engine.checkpoint import load_checkpoint
    from adaptertune.engine.epoch import make_trainer, train_one_epoch
    from adaptertune.engine.loop import end_epoch, final_test, start_state, validate_and_select

    cpu, train, val = torch.device("cpu"), _batches(3), _batches(1, seed=1)
    tr = make_trainer(_mlp(), train, train_config(epochs=2), cpu, checkpoint_path=tmp_path / "c.safetensors")
    state = start_state(tr, resume=False)
    assert (state.step, state.epochs_done, state.best_epoch, tr.steps_per_epoch) == (0, 0, 0, 3)
    metrics = train_one_epoch(tr, state, train, epoch=1)
    assert state.step == metrics["step"] == 3 and state.seen == 12 and state.lr == metrics["lr"]
    validate_and_select(tr, state, val, 1, metrics, Selection.BEST_VAL)
    assert state.best_epoch == 1 and state.best_val == metrics["val_acc"] and state.stale_epochs == 0
    end_epoch(tr, state, metrics)
    assert state.epochs_done == 1 and state.history == [metrics]
    _, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert meta["state"] == state.to_meta()  # the checkpoint holds exactly the loop state
    test, test_last, _ = final_test(tr, state, val)
    assert test == test_last  # the last epoch is the selected one
