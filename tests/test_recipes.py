"""timm recipes as options: optimizer choice, layer decay, EMA, augmentation presets, mixup/cutmix, gradient
accumulation, gradient checkpointing, protocol records and TensorBoard hparams."""

from __future__ import annotations

import pytest
import torch

from adaptertune import AdapterConfig, add_adapters
from adaptertune.config import DataConfig, RunConfig, TrainConfig
from adaptertune.config_keys import apply_overrides
from adaptertune.data import build_transforms
from adaptertune.engine import Selection, fit
from adaptertune.engine import epoch as epoch_module
from adaptertune.engine.backward import StepRunner, make_mixup
from adaptertune.engine.ema import TrainableEma
from adaptertune.engine.epoch import make_trainer
from adaptertune.engine.optim import build_optimizer, check_optimizer
from adaptertune.errors import ConfigError
from adaptertune.runs.summary import make_protocol

DATA_CONFIG = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875}
RECIPE_FIT = {"weight_decay": 0.05, "warmup_epochs": 0, "log_every_steps": 1}  # train_config: with weight decay
LAST = Selection.LAST_EPOCH  # the fits without a validation loader


def _batches(n: int, size: int, seed: int = 0, classes: int = 4) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, classes, (size,), generator=g), 0)
        for _ in range(n)
    ]


@pytest.fixture
def adapted(tiny_vit):
    """Factory: ``adapted(seed=0)`` is the tiny ViT (4 classes), small-init rank-2 adapters on its last 2 blocks."""

    def make(seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return add_adapters(
            tiny_vit(num_classes=4, seed=seed), AdapterConfig(rank=2, placement="last:2", init="small")
        )

    return make


def _trained(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- optimizer, layer decay
def test_default_optimizer_is_the_two_group_adamw(adapted, train_config):
    model = adapted()
    a = make_trainer(model, _batches(1, 4), train_config(**RECIPE_FIT), torch.device("cpu")).optimizer  # the loop's
    b = build_optimizer(model, 1e-2, 0.05)
    assert type(a) is torch.optim.AdamW and a.state_dict() == b.state_dict()


def test_timm_optimizer_by_name_and_unknown_name(adapted):
    opt = build_optimizer(adapted(), 1e-2, 0.05, optimizer="sgd")
    assert isinstance(opt, torch.optim.SGD)
    with pytest.raises(ConfigError, match=r"`train.optimizer` 'nope' is not a timm optimizer; use one of: .*adamw"):
        check_optimizer("nope")


def test_layer_decay_groups_and_the_loop_scales_their_lr(train_config, tiny_vit, monkeypatch):
    model = tiny_vit(num_classes=4)
    made = []
    monkeypatch.setattr(
        epoch_module, "build_optimizer", lambda *a, **k: made.append(build_optimizer(*a, **k)) or made[-1]
    )
    fit(
        model,
        _batches(1, 4),
        None,
        _batches(1, 4, seed=1),
        train_config(**RECIPE_FIT, layer_decay=0.5),
        torch.device("cpu"),
        selection=LAST,
    )
    groups = made[0].param_groups
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.5**13)  # embeddings: layer 0 of 12 blocks + head
    lr = next(g["lr"] for g in groups if g["lr_scale"] == 1.0)
    assert all(g["lr"] == pytest.approx(lr * g["lr_scale"]) for g in groups)


# ---------------------------------------------------------------- accumulation, checkpointing
def test_accum_2_of_8_equals_one_batch_of_16(adapted, train_config):
    runs = []
    for accum in (1, 2):
        model = adapted()
        cfg = train_config(**RECIPE_FIT, accum_steps=accum)
        fit(model, _batches(3, 16), None, _batches(1, 4, seed=1), cfg, torch.device("cpu"), selection=LAST)
        runs.append(_trained(model))
    for n in runs[0]:
        torch.testing.assert_close(runs[1][n], runs[0][n], rtol=1e-4, atol=1e-6)


def test_grad_checkpointing_gives_the_same_grads(adapted, train_config):
    x, y, _ = _batches(1, 4)[0]
    grads = []
    for ckpt in (False, True):
        model = adapted().train()
        model.set_grad_checkpointing(ckpt)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert model.grad_checkpointing
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)
    m = adapted()
    fit(
        m,
        _batches(1, 4),
        None,
        _batches(1, 4, seed=1),
        train_config(**RECIPE_FIT, grad_checkpointing=True),
        torch.device("cpu"),
        selection=LAST,
    )
    assert m.grad_checkpointing  # the option reached timm's switch


# ---------------------------------------------------------------- EMA
class _Trajectory:
    """Trainable tensors after every optimizer step (on_step runs right after it with log_every_steps=1)."""

    def __init__(self, model):
        self.model, self.states = model, []

    def on_train_start(self, *a):
        pass

    def on_step(self, step, loss, lr):
        self.states.append(_trained(self.model))

    def on_epoch_end(self, metrics):
        pass


def test_ema_of_the_trained_tensors_is_selected_and_tested_with_ema_eval(adapted, train_config):
    model = adapted()
    start, traj, decay = _trained(model), _Trajectory(model), 0.8
    cfg = train_config(**RECIPE_FIT, epochs=2, ema=decay, ema_eval=True)
    result = fit(model, _batches(3, 4), None, _batches(1, 4, seed=1), cfg, torch.device("cpu"), [traj], selection=LAST)
    ema = dict(start)
    for state in traj.states:
        ema = {n: decay * ema[n] + (1 - decay) * state[n] for n in ema}
    assert len(traj.states) == 6
    for n in ema:
        torch.testing.assert_close(result.best_state[n], ema[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dict(model.named_parameters())[n].detach(), ema[n], rtol=1e-5, atol=1e-6)
    assert not torch.equal(result.best_state["head.weight"], traj.states[-1]["head.weight"])


def test_ema_without_ema_eval_is_reported_next_to_the_live_weights(adapted, train_config):
    model = adapted()
    data = _batches(2, 4), _batches(1, 4, seed=2), _batches(1, 4, seed=1)
    result = fit(model, *data, train_config(**RECIPE_FIT, ema=0.9), torch.device("cpu"), selection=Selection.BEST_VAL)
    assert "val_acc_ema" in result.history[0] and "val_acc" in result.history[0]


def test_ema_update_and_swap_are_exact():
    model = torch.nn.Linear(3, 2)
    ema = TrainableEma(model, 0.75)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.shadow["weight"], before + 0.25)
    live = model.weight.detach().clone()
    with ema.applied():
        assert torch.equal(model.weight, before + 0.25)
    assert torch.equal(model.weight, live)


class _StopAt:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_start(self, *a):
        pass

    def on_step(self, *a):
        pass

    def on_epoch_end(self, metrics):
        if metrics["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_resume_with_ema_and_mixup_is_exact(adapted, train_config, tmp_path):
    import numpy as np

    cfg = train_config(**RECIPE_FIT, epochs=2, ema=0.9, ema_eval=True)
    data, dev = (_batches(2, 4), None, _batches(1, 4, seed=1)), torch.device("cpu")
    mix = make_mixup(0.8, 1.0, 0.0, num_classes=4)
    whole = fit(adapted(), *data, cfg, dev, mix=mix, selection=LAST)
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(KeyboardInterrupt):
        fit(adapted(), *data, cfg, dev, [_StopAt(2)], checkpoint_path=ckpt, mix=mix, selection=LAST)
    np.random.rand(7)  # numpy's global stream moved on: the mixing does not depend on it
    resumed = fit(adapted(), *data, cfg, dev, checkpoint_path=ckpt, resume=True, mix=mix, selection=LAST)
    for n, v in whole.best_state.items():
        assert torch.equal(resumed.best_state[n], v), n


# ---------------------------------------------------------------- mixup / cutmix, augmentation presets
def test_mixup_soft_targets_and_odd_batches(adapted, train_config):
    mix = make_mixup(0.8, 1.0, 0.1, num_classes=4)
    runner = StepRunner(train_config(**RECIPE_FIT), "fp32", torch.device("cpu"), mix)
    x, y, _ = _batches(1, 5)[0]
    xm, target = runner._mixed(x, y, step=0)
    assert xm.shape == x.shape and target.shape == (5, 4)
    torch.testing.assert_close(target.sum(1), torch.ones(5))
    assert make_mixup(0.0, 0.0, 0.1, 4) is None
    model = adapted()
    result = fit(
        model,
        _batches(2, 5),
        None,
        _batches(1, 4, seed=1),
        train_config(**RECIPE_FIT),
        torch.device("cpu"),
        mix=mix,
        selection=LAST,
    )
    assert result.history[0]["train_loss"] > 0


def test_augmentation_presets():
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing

    basic_train, basic_eval = build_transforms(DATA_CONFIG)
    rand_train, rand_eval = build_transforms(DATA_CONFIG, aug="randaug")
    none_train, none_eval = build_transforms(DATA_CONFIG, aug="none")
    kinds = {type(t) for t in rand_train.transforms}
    assert RandAugment in kinds and RandomErasing in kinds
    assert not {RandAugment, RandomErasing} & {type(t) for t in basic_train.transforms}
    assert none_train is none_eval and repr(rand_eval) == repr(basic_eval)
    with pytest.raises(ConfigError, match="`data.aug` must be one of"):
        DataConfig(aug="autoaug")


# ---------------------------------------------------------------- config, overrides, protocol
def test_overrides_reach_the_recipe_fields_and_checks_name_them():
    d = apply_overrides(
        {},
        [
            "train.ema=0.999",
            "train.ema_eval=true",
            "data.augment=true",
            "data.aug=randaug",
            "data.mixup=0.8",
            "train.layer_decay=0.75",
            "train.optimizer=sgd",
            "accum_steps=2",
            "grad_checkpointing=true",
        ],
    )
    cfg = RunConfig.from_dict(d)
    assert (cfg.train.ema, cfg.train.ema_eval, cfg.data.aug, cfg.data.mixup) == (0.999, True, "randaug", 0.8)
    assert (cfg.train.layer_decay, cfg.train.optimizer, cfg.train.accum_steps) == (0.75, "sgd", 2)
    protocol = make_protocol(cfg, DATA_CONFIG, ["a"], {"train": 1}, selection="best_val_top1")
    assert protocol["ema"] == 0.999 and protocol["layer_decay"] == 0.75 and protocol["accum_steps"] == 2
    assert protocol["augment"] == "rrc+flip+rand-m9-mstd0.5+erase0.25" and protocol["mixup"] == 0.8
    plain = make_protocol(RunConfig(), DATA_CONFIG, ["a"], {"train": 1}, selection="best_val_top1")
    assert not {"ema", "layer_decay", "optimizer", "accum_steps", "mixup", "grad_checkpointing"} & set(plain)
    for bad, match in [
        ({"ema": 1.0}, r"`train.ema` \(the EMA decay\) must be in \(0, 1\), got 1"),
        ({"ema_eval": True}, r"`train.ema_eval` true needs `train.ema`"),
        ({"layer_decay": 1.5}, r"`train.layer_decay` must be in \(0, 1\], got 1.5"),
        ({"accum_steps": 9, "batch_size": 8}, r"`train.accum_steps` 9 is more than `train.batch_size` 8"),
    ]:
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad)


# ---------------------------------------------------------------- a run with recipes
def test_run_with_recipes_records_them_and_writes_tensorboard_hparams(run_config, image_folder, tmp_path):
    from adaptertune.runs import run

    recipes = {"data": {"aug": "randaug", "mixup": 0.8}, "epochs": 1, "batch_size": 8, "device": "cpu", "ema": 0.9}
    recipes |= {"ema_eval": True, "tensorboard": True}
    summary = run(run_config(image_folder, tmp_path / "r", adapter={"rank": 2}, **recipes))
    assert summary.protocol["ema"] == 0.9 and summary.protocol["mixup"] == 0.8
    events = list((tmp_path / "r" / "tensorboard" / "hparams").glob("events.out.tfevents.*"))
    assert len(events) == 1
    blob = events[0].read_bytes()
    assert b"hparams" in blob and b"train.ema" in blob and b"hparam/test_acc" in blob
    with pytest.raises(ConfigError, match="trains on cached features: `data.mixup` and `data.cutmix` must be 0"):
        run(run_config(image_folder, tmp_path / "c", "linear-probe-cached", **recipes))
