"""Rank advice: on a synthetic task whose shift has known rank k, the advice is near k."""

from __future__ import annotations

import pytest
import torch

from adaptertune.analysis.advise import advise_rank, captured_energy, rank_for_energy, table_ranks
from adaptertune.errors import ConfigError
from helpers import TINY_VIT_ARGS, TokenNet, shift_task

pytestmark = pytest.mark.usefixtures("one_thread")


def test_captured_energy_and_rank_rule():
    e = captured_energy(torch.tensor([1.0, 3.0, 0.0, 2.0]))  # energies 9, 4, 1, 0 of 14
    assert torch.allclose(e, torch.tensor([9 / 14, 13 / 14, 1.0, 1.0], dtype=torch.float64))
    assert rank_for_energy(e, 0.9) == 2 and rank_for_energy(e, 0.5) == 1 and rank_for_energy(e, 1.0) == 3
    assert table_ranks(384) == [1, 2, 4, 8, 16, 32, 64, 128, 256] and table_ranks(48) == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize("k", [2, 4, 6])
def test_advice_recovers_known_shift_rank(k):
    torch.manual_seed(0)
    model = TokenNet()
    advice = advise_rank(model, shift_task(k), placement="all", threshold=0.9)
    # the head-only fit leaves a little held-out error outside the merged classes and the first block's
    # gradients pass through a frozen non-linear block: the estimate lands in k-1 .. k+2
    assert k - 1 <= advice.advised_rank <= k + 2, advice.energy[:10]
    assert advice.energy_at(k + 2) >= 0.9 and advice.energy_at(max(k // 2, 1)) < 0.9
    assert advice.head_train_loss < 2.0 and advice.head_heldout_loss > 0
    assert advice.blocks == [0, 1] and advice.n_images == 512 and advice.n_tokens == 512 * 4
    assert len(advice.energy) == 32 and abs(advice.energy[-1] - 1) < 1e-9


def test_backbone_is_untouched_and_placement_is_honoured():
    torch.manual_seed(0)
    model = TokenNet(depth=3)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
    advice = advise_rank(model, shift_task(3)[:2], placement="last:1", head_steps=20)
    assert advice.blocks == [2] and list(advice.block_ranks) == [2]
    for k, v in model.state_dict().items():
        if not k.startswith("head"):
            assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.blocks.parameters())


def test_bad_options_are_errors():
    with pytest.raises(ConfigError, match="signal"):
        advise_rank(TokenNet(), shift_task(2), signal="hessian")
    with pytest.raises(ConfigError, match="threshold"):
        advise_rank(TokenNet(), shift_task(2), threshold=1.5)


def test_cli_advise_rank_prints_advice_and_table(image_folder, tmp_path, capsys):
    import json

    from adaptertune.cli.main import main

    out = tmp_path / "advice.json"
    argv = ["advise-rank", *TINY_VIT_ARGS, "--dataset", "imagefolder"]
    argv += ["--data-root", str(image_folder), "--batches", "2", "--batch-size", "8", "--placement", "last:2"]
    argv += ["--permutations", "0"]  # the energy rule (the null-tested default: tests/test_advise_null.py)
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "advised rank:" in text and "captured energy E(r)" in text and "seconds:" in text
    assert main([*argv, "--null-check"]) == 0 and "labels permuted" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["blocks"] == [10, 11] and 1 <= d["advised_rank"] <= 192 and d["total_seconds"] > 0
    assert main([*argv, "--threshold", "2"]) == 2


def test_null_check_permutes_labels_and_leaves_the_advice_alone():
    torch.manual_seed(0)
    plain = advise_rank(TokenNet(), shift_task(2), threshold=0.9)
    torch.manual_seed(0)
    checked = advise_rank(TokenNet(), shift_task(2), threshold=0.9, null=True)
    assert checked.energy == plain.energy and checked.advised_rank == plain.advised_rank
    assert len(checked.null_energy) == 32 and abs(checked.null_energy[-1] - 1) < 1e-9
    # a rank-2 shift concentrates the true spectrum; permuted labels spread it over the head's 9 directions
    assert checked.energy_at(4) - checked.null_energy_at(4) > 0.1 and checked.null_rank > checked.advised_rank
    with pytest.raises(ConfigError, match="null"):
        plain.null_energy_at(4)
