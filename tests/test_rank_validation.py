"""benchmarks/rank_validation.py's scoring: leave-one-task-out constant and mean |log2(prediction / elbow)|."""

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "rank_validation.py"


@pytest.fixture(scope="module")
def rv():
    spec = importlib.util.spec_from_file_location("rank_validation", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _task(name, elbow, advice, energy, verdict=None):
    return {"task": name, "elbow": elbow, "interval": "[?, ?]", "advice": advice, "verdict": verdict,
            "energy_rule": energy}  # fmt: skip


def test_scores_against_a_known_answer(rv):
    results = [
        _task("a", 8, 8, 64),  # advice exact, energy 3 doublings off
        _task("b", 32, 16, 64),  # advice 1 doubling low, energy 1 high
        _task("c", 2, None, 64, verdict="head-only may suffice"),  # head-only counts as rank 1: 1 doubling
        _task("d", None, 4, 64),  # elbow not reached: left out of every mean
    ]
    text = rv.table(results)
    # leave-one-task-out constant: geometric mean of the other reached elbows
    assert [r["constant"] for r in results] == [8, 4, round(2**4), round(2 ** ((3 + 5 + 1) / 3))]
    assert "mean |log2(advice (null) / elbow)| over 3 tasks with a reached elbow: 0.67" in text
    energy = (3 + 1 + 5) / 3
    assert f"mean |log2(energy rule / elbow)| over 3 tasks with a reached elbow: {energy:.2f}" in text
    const = (abs(math.log2(8 / 8)) + abs(math.log2(4 / 32)) + abs(math.log2(16 / 2))) / 3
    assert f"mean |log2(constant / elbow)| over 3 tasks with a reached elbow: {const:.2f}" in text
    assert "| c | 2 | [?, ?] | head-only may suffice | 64 | 16 |" in text
    assert "| d | not reached |" in text
    assert "verdict: the null-tested advice beats both" in text  # 0.67 vs 3.0 and 1.67
    worse = rv.table([_task("a", 8, 64, 8), _task("b", 8, 64, 8)])
    assert "does not beat the constant and the energy rule: use it as a starting point only" in worse
