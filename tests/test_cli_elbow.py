"""``adaptertune elbow FILE.csv``: the product's results.csv and another tool's rank,seed,acc files, by the
effect-size rule (default) and the paired-significance rule."""

from __future__ import annotations

import csv
import json
import math

from adaptertune.analysis.elbow_table import elbow_rows
from adaptertune.cli import main

RANKS = (1, 2, 4, 8, 16, 32, 64)


def _acc(rank: int, seed: int, knee: float, i: int) -> float:
    return 70 + 2 * math.log2(min(rank, knee)) + 0.5 * seed + 0.3 * ((i + seed) % 3 - 1)


def _write(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _results_rows():
    rows = [
        {
            "run": f"{d}-{r}-{s}",
            "status": "success",
            "dataset": d,
            "backbone": "vit_s",
            "method": "adapter",
            "variant": f"adapter r={r}",
            "rank": r,
            "seed": s,
            "test_acc": f"{_acc(r, s, knee, i):.4f}",
            "setup_id": "x",
        }
        for d, knee in (("easy", 4), ("hard", math.inf))
        for i, r in enumerate(RANKS)
        for s in range(3)
    ]
    rows += [{**rows[0], "run": "head", "method": "head", "variant": "head", "rank": "", "test_acc": "60.0"}]
    rows += [{**rows[1], "run": "broken", "status": "failed", "test_acc": ""}]
    return rows


def test_paired_rule_of_a_results_csv_groups_by_dataset_and_writes_json(tmp_path, capsys):
    path = _write(tmp_path / "results.csv", _results_rows())
    out = tmp_path / "elbow.json"
    assert main(["elbow", str(path), "--rule", "paired", "--json", str(out), "--boot", "50"]) == 0
    text = capsys.readouterr().out
    assert "dataset=easy" in text and "elbow 4," in text and "elbow not reached" in text and "rule: elbow =" in text
    d = json.loads(out.read_text())
    assert [g["group"]["dataset"] for g in d] == ["easy", "hard"]
    assert d[0]["group"]["variant"] == "adapter"  # grouped without its rank
    assert d[0]["elbow"] == 4 and d[1]["elbow"] == "not reached" and d[1]["interval"][1] == "not reached"
    assert "Holm" in d[0]["rule"] and len(d[0]["fits"]) == 4 and {"weight", "identified"} <= set(d[0]["fits"][0])


def test_elbow_of_another_tools_csv_with_a_grouping_column(tmp_path, capsys):
    rows = [
        {"task": t, "rank": r, "seed": s, "acc": _acc(r, s, 16, i)}
        for t in ("a", "b")
        for i, r in enumerate(RANKS)
        for s in range(3)
    ]
    rows += [{"task": "single", "rank": r, "seed": 0, "acc": 70.0 + r} for r in RANKS]
    path = _write(tmp_path / "sweep.csv", rows)
    assert (
        main(["elbow", str(path), "--group-by", "task", "--rule", "paired", "--boot", "0", "--compare", "adjacent"])
        == 0
    )
    text = capsys.readouterr().out
    assert text.count("elbow 16,") == 2 and "task=single: needs >= 2 seeds" in text
    # without --group-by the other tool's file is one sweep; repeated (rank, seed) pairs are an error
    assert main(["elbow", str(path), "--boot", "0"]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_effect_rule_is_the_default_and_names_rule_delta_bound_and_verdict(tmp_path, capsys):
    """Knee at 4 with 0.3-point noise, 3 seeds: elbow 4 within delta 1; a log-linear sweep (+2 per doubling)
    is not reached; --delta changes the answer and is printed."""
    path = _write(tmp_path / "results.csv", _results_rows())
    out = tmp_path / "elbow.json"
    assert main(["elbow", str(path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dataset=easy" in text and "elbow 4 (delta 1; acc(4) - best >=" in text
    assert "elbow not reached (delta 1; acc(64) - best smaller >=" in text
    assert text.count("rule: effect-size rule: elbow = smallest swept rank shown within delta = 1 points") == 2
    assert "lower bound (95%) vs best" in text and "within 1" in text
    d = json.loads(out.read_text())
    assert d[0]["elbow"] == 4 and d[0]["verdict"] == "elbow" and d[0]["delta"] == 1.0
    assert d[1]["elbow"] == "not reached" and d[1]["top_gain"] > 1.0 and d[0]["group"]["variant"] == "adapter"
    # a wider margin: rank 1 is within 5 points of the best of the knee-at-4 sweep (gap 4)
    assert main(["elbow", str(path), "--delta", "5"]) == 0
    assert "setup_id=x: elbow 1 (delta 5;" in capsys.readouterr().out


def test_rank_zero_head_only_joins_both_rules(tmp_path, capsys):
    rows = [
        {"rank": r, "seed": s, "acc": _acc(max(r, 1), s, 4, i) - (2.0 if r == 0 else 0.0)}
        for i, r in enumerate((0, *RANKS))
        for s in range(3)
    ]
    path = _write(tmp_path / "sweep.csv", rows)
    assert main(["elbow", str(path)]) == 0
    text = capsys.readouterr().out
    assert "elbow 4 (delta 1;" in text and "\n0  " in text
    assert main(["elbow", str(path), "--rule", "paired", "--boot", "0"]) == 0
    assert "elbow 4," in capsys.readouterr().out


def test_delta_and_rule_options_are_checked(tmp_path, capsys):
    from adaptertune.analysis.elbow_effect import DEFAULT_DELTA, RULES
    from adaptertune.cli import elbow as cli_elbow

    assert float(cli_elbow.DELTA_HELP) == DEFAULT_DELTA and cli_elbow.RULES == RULES
    path = _write(
        tmp_path / "sweep.csv",
        [{"rank": r, "seed": s, "acc": _acc(r, s, 4, i)} for i, r in enumerate(RANKS) for s in range(3)],
    )
    assert main(["elbow", str(path), "--rule", "paired", "--delta", "2"]) == 2
    assert "--delta belongs to the effect-size rule" in capsys.readouterr().err
    assert main(["elbow", str(path), "--delta", "0"]) == 2
    assert "delta (accuracy points) must be a finite number > 0, got 0" in capsys.readouterr().err


def test_elbow_cli_bad_input_is_one_line(tmp_path, capsys):
    path = _write(tmp_path / "x.csv", [{"rank": 1, "score": 50.0}])
    assert main(["elbow", str(path)]) == 2
    assert "missing seed, acc" in capsys.readouterr().err
    assert main(["elbow", str(path), "--group-by", "task"]) == 2
    assert main(["elbow", str(tmp_path / "nope.csv")]) == 2
    assert "No CSV file" in capsys.readouterr().err
    assert main(["elbow", str(path), "--acc-col", "score"]) == 2
    assert "missing seed" in capsys.readouterr().err


def test_elbow_rows_group_by_unknown_column_lists_the_columns():
    import pytest

    from adaptertune.errors import DataError

    with pytest.raises(DataError, match="No column 'task' to group by; columns: rank, seed, acc"):
        elbow_rows([{"rank": "1", "seed": "0", "acc": "5"}], group_by=["task"])
    from adaptertune.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown elbow rule 'knee'; accepted: effect, paired"):
        elbow_rows([{"rank": "1", "seed": "0", "acc": "5"}], rule="knee")


def test_elbow_markdown_names_the_rule_and_the_bound():
    from adaptertune.analysis.elbow_table import elbow_markdown

    rows = [
        {"task": t, "rank": r, "seed": s, "acc": _acc(r, s, 8, i)}
        for t in ("a", "b")
        for i, r in enumerate(RANKS)
        for s in range(3)
    ]
    rows += [{"task": "single", "rank": r, "seed": 0, "acc": 70.0 + r} for r in RANKS]
    md = elbow_markdown(elbow_rows(rows, group_by=["task"]))
    assert md.startswith("Rule: effect-size rule:") and "| task | ranks | elbow | bound |" in md
    assert "| a | 1,2,4,8,16,32,64 | 8 | acc(8) - best >=" in md and "| single |  | needs >= 2 seeds" in md
    paired = elbow_markdown(elbow_rows(rows, group_by=["task"], rule="paired", n_boot=0))
    assert "Holm" in paired.splitlines()[0] and "| a | 1,2,4,8,16,32,64 | 8 | [8, 8] |" in paired
