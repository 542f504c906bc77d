"""``report`` and the elbow: a rank sweep with one seed per rank gets a reason, not a crash."""

from __future__ import annotations

from adaptertune.reports.builder import build_report
from test_report import PARAMS, write_run


def test_report_of_a_one_seed_rank_sweep_says_it_needs_two_seeds(tmp_path):
    PARAMS.update({r: 1000 * r for r in (1, 2, 8, 32, 64)})
    root = tmp_path / "runs"
    for rank in (1, 2, 4, 8, 16):
        write_run(root, "fashion-mnist", "adapter", 0, 90.0 - 20.0 * rank**-1.5, rank=rank)
    build_report(root, tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    section = md.split("## Rank elbow")[1]
    row = next(line for line in section.splitlines() if line.startswith("| fashion-mnist"))
    assert "needs >= 2 seeds" in row
