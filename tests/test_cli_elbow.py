"""``adaptertune elbow FILE.csv``: the product's results.csv and another tool's rank,seed,acc files."""

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


def test_elbow_of_a_results_csv_groups_by_dataset_and_writes_json(tmp_path, capsys):
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
    path = _write(tmp_path / "results.csv", rows)
    out = tmp_path / "elbow.json"
    assert main(["elbow", str(path), "--json", str(out), "--boot", "50"]) == 0
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
    assert main(["elbow", str(path), "--group-by", "task", "--boot", "0", "--compare", "adjacent"]) == 0
    text = capsys.readouterr().out
    assert text.count("elbow 16,") == 2 and "task=single: needs >= 2 seeds" in text
    # without --group-by the other tool's file is one sweep; repeated (rank, seed) pairs are an error
    assert main(["elbow", str(path), "--boot", "0"]) == 2
    assert "appears twice" in capsys.readouterr().err


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
