"""Budget curves (reports/budget.py) on hand-made validation curves with known answers: the curve of a run, the mean
over seeds while every seed runs, the accuracy at a budget,
the ranking at 25/50/100% of the median cell's longest run."""

import math

import pytest

from adaptertune.reports.budget import (
    BUDGET_FRACTIONS,
    RunCurve,
    accuracy_at,
    budget_curves,
    budget_rows,
    mean_curve,
    plot_budget,
    ranks_at_budgets,
    ranks_markdown,
    run_curve,
)
from adaptertune.reports.collect import Cell, RunRecord
from adaptertune.runs import RunStatus


def _history(steps, accs, seconds=None):
    seconds = seconds or [1.5] * len(steps)
    return [
        {"epoch": e, "step": s, "epoch_seconds": t, "val_acc": a, "train_loss": 1.0}
        for e, (s, a, t) in enumerate(zip(steps, accs, seconds), 1)
    ]


def _record(variant, seed, steps, accs, stopped=None, best=None, seconds=None, dataset="d"):
    return RunRecord(
        f"{variant},seed={seed}",
        RunStatus.SUCCESS,
        dataset=dataset,
        backbone="b",
        method=variant,
        variant=variant,
        seed=seed,
        test_acc=accs[-1],
        history=_history(steps, accs, seconds),
        stopped_epoch=stopped,
        best_epoch=best,
        num_classes=4,
    )


def _cell(variant, *runs):
    return Cell(runs[0].dataset, "b", variant, variant, None, list(runs), "x")


def _curve(steps, accs, seed="0"):
    n = len(steps)
    return RunCurve(
        seed, tuple(range(1, n + 1)), tuple(steps), tuple(float(s) for s in steps), tuple(accs), None, False
    )


def test_a_run_curve_sums_epoch_seconds_and_keeps_the_stop():
    r = _record("lora", 3, [4, 8, 12], [50.0, 60.0, 55.0], stopped=3, best=2, seconds=[2.0, 2.5, 3.25])
    c = run_curve(r)
    assert c.seed == "3" and c.epochs == (1, 2, 3) and c.steps == (4, 8, 12)
    assert c.seconds == (2.0, 4.5, 7.75) and c.val_acc == (50.0, 60.0, 55.0)
    assert (c.best_epoch, c.stopped_early) == (2, True)
    assert run_curve(_record("lora", 3, [4], [50.0])).stopped_early is False


def test_runs_without_validation_or_steps_have_no_curve_and_their_cell_is_left_out():
    no_val = _record("head", 0, [4, 8], [50.0, 60.0])
    for m in no_val.history:
        del m["val_acc"]
    no_step = _record("full", 0, [4, 8], [50.0, 60.0])
    del no_step.history[1]["step"]
    assert run_curve(no_val) is None and run_curve(no_step) is None
    ok = _record("lora", 0, [4, 8], [50.0, 60.0])
    half = _cell("bitfit", _record("bitfit", 0, [4], [40.0]), no_val)  # one seed without a curve: the cell goes
    curves = budget_curves([_cell("head", no_val), _cell("full", no_step), _cell("lora", ok), half])
    assert list(curves[("d", "b")]) == ["lora"]


def test_budget_rows_are_the_metrics_epoch_by_epoch():
    r = _record("lora", 1, [4, 8], [50.0, 62.5], seconds=[2.0, 3.0])
    rows = budget_rows(budget_curves([_cell("lora", r)]))
    assert rows == [
        {"dataset": "d", "backbone": "b", "cell": "lora", "seed": "1", "epoch": 1, "step": 4, "seconds": "2.0000",
         "val_acc": "50.0000"},
        {"dataset": "d", "backbone": "b", "cell": "lora", "seed": "1", "epoch": 2, "step": 8, "seconds": "5.0000",
         "val_acc": "62.5000"},
    ]  # fmt: skip


def test_the_mean_curve_runs_while_every_seed_runs():
    a = _curve([10, 20, 30], [50.0, 60.0, 70.0])
    b = _curve([10, 20], [40.0, 80.0], seed="1")
    assert mean_curve([a, b], "steps") == ([10.0, 20.0], [45.0, 70.0])


def test_accuracy_at_a_budget_is_the_best_reached_within_it():
    c = _curve([10, 20, 30, 40], [50.0, 70.0, 60.0, 65.0])
    assert accuracy_at(c, 5) is None  # the first epoch ended later
    assert accuracy_at(c, 10) == 50.0 and accuracy_at(c, 29.9) == 70.0
    assert accuracy_at(c, 40) == 70.0  # a later dip does not lower what selection kept
    assert accuracy_at(c, 1000) == 70.0  # stopped early: keeps its selection


def test_the_ranking_changes_with_the_budget_when_a_slow_method_overtakes():
    fast = [_curve([10, 20, 30, 40], [60.0, 70.0, 70.0, 70.0], seed=s) for s in "01"]  # plateaus, stops early
    slow = [  # rises to 90 over 80 steps; two seeds that differ
        _curve([10, 20, 30, 40, 50, 60, 70, 80], [30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 85.0, 90.0]),
        _curve([10, 20, 30, 40, 50, 60, 70, 80], [32.0, 42.0, 52.0, 62.0, 72.0, 82.0, 87.0, 92.0], seed="1"),
    ]
    late = [_curve([30, 60], [65.0, 68.0])]  # first epoch after 25% of 80 steps
    tie = [_curve([20, 40], [70.0, 70.0])]
    ranks = {
        r.variant: r for r in ranks_at_budgets({("d", "b"): {"fast": fast, "slow": slow, "late": late, "tie": tie}})
    }
    # 25, 50, 100% of the median cell's longest run: fast 40, tie 40, late 60, slow 80 -> 50 steps
    assert ranks["fast"].budgets == (12.5, 25.0, 50.0)
    assert ranks["slow"].accs == (31.0, 41.0, 71.0)
    assert ranks["fast"].ranks == (1, 1, 2) and ranks["tie"].ranks == (None, 1, 2)  # equal means share a rank
    assert ranks["slow"].ranks == (2, 3, 1)
    assert ranks["late"].ranks == (None, None, 4) and ranks["late"].accs[:2] == (None, None)
    md = ranks_markdown(list(ranks.values()))
    assert "| cell | 25% (12.5 steps) | 50% (25 steps) | 100% (50 steps) |" in md
    assert "| slow | 2 (31.00) | 3 (41.00) | 1 (71.00) |" in md and "| late | - | - | 4 (65.00) |" in md
    assert md.index("| slow |") < md.index("| fast |")  # ordered by the full budget
    assert "The ranking changes with the budget." in md


def test_a_stable_ranking_is_said_to_be_stable():
    curves = {("d", "b"): {v: [_curve([10, 20], [a, a + 5])] for v, a in (("x", 50.0), ("y", 60.0))}}
    assert "The ranking is the same at every budget." in ranks_markdown(ranks_at_budgets(curves))
    assert len(BUDGET_FRACTIONS) == 3


@pytest.mark.parametrize("axis", ["steps", "seconds"])
def test_budget_plots_are_pngs_one_panel_per_pair(tmp_path, axis):
    cells = [
        _cell(v, *(_record(v, s, [4, 8, 12], [40.0 + 10 * i + s, 50.0, 60.0], stopped=3 if i else None, best=3,
                           dataset=d) for s in (0, 1)))
        for d in ("d1", "d2")
        for i, v in enumerate(("head", "lora", "ssf"))
    ]  # fmt: skip
    curves = budget_curves(cells)
    assert len(curves) == 2
    path = plot_budget(curves, tmp_path / f"budget_{axis}.png", axis, cells)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_budget({}, tmp_path / "none.png", axis, cells) is None and not (tmp_path / "none.png").exists()
    assert not math.isnan(mean_curve(curves[("d1", "b")]["lora"], axis)[1][0])
