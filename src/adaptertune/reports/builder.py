"""``adaptertune report``: tables, plots and one self-contained ``report.html`` from a folder of runs.

Writes into the output folder: ``results.csv`` (one row per run folder, failed and broken ones included),
``cells.csv`` (one row per cell: mean, std, n, per-seed accuracies), ``gains.csv`` (each variant against each
reference over paired seeds: mean difference, 95% intervals, n, verdict), ``table.md`` (accuracy tables, gains,
parameter shares), ``table.tex`` (paper-style), PNG plots and ``report.html`` (images embedded as base64); where
runs wrote per-image predictions, also ``agreement.csv``, ``ensemble.csv`` and ``pooled.csv`` (:mod:`.agreement`).
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_csv, atomic_write_text, check_output_dir, ensure_output_dir
from ..errors import AdapterTuneError
from .ablation import ablation_html, ablation_markdown, init_ablation
from .agreement import prediction_tables
from .board import write_board
from .collect import Cell, RunRecord, aggregate, collect_runs, pair_label
from .data_table import DATA_NOTE, data_markdown, data_rows
from .markdown import markdown_html
from .noise import noise_columns, noise_rule
from .per_image import per_image_markdown
from .placement import placement_html, placement_markdown, placement_rows
from .plots import plot_accuracy_vs_params, plot_accuracy_vs_rank, plot_rank_elbows, plot_training_curves, rank_elbows
from .stats import WIN_RULE
from .tables import (
    comparison_title,
    gains,
    gains_markdown,
    gains_rows,
    gains_summary,
    html_table,
    interval_text,
    latex_table,
    markdown_table,
    param_shares,
    replicates,
    results_rows,
)
from .tuning_table import grid_edge_warnings, lr_markdown, lr_rows, search_markdown, tuning_note
from .values import plain

__all__ = ["Report", "build_report", "skipped_counts"]

_logger = logging.getLogger(__name__)

_PLOTS = (
    ("accuracy_vs_rank.png", "Accuracy vs adapter rank (mean ± std over seeds)", plot_accuracy_vs_rank),
    ("accuracy_vs_params.png", "Accuracy vs trainable parameters, with the Pareto front", plot_accuracy_vs_params),
    ("training_curves.png", "Training curves (mean ± std over seeds)", plot_training_curves),
)


@dataclass
class Report:
    out_dir: Path
    records: list[RunRecord]
    cells: list[Cell]
    table_md: str
    gain_lines: list[str]
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # tuned values on the edge of their grids

    @property
    def problems(self) -> list[RunRecord]:
        return [r for r in self.records if r.status != "success"]


def skipped_counts(records: list[RunRecord]) -> str:
    """``1 run skipped (not finished) · 6 images skipped (unreadable, in 3 runs)``: the run folders left out of
    the report, apart from the unreadable images its finished runs skipped (summed over those runs)."""
    runs = sum(r.status != "success" for r in records)
    hit = [r for r in records if r.status == "success" and r.unreadable]
    images = sum(n or 0 for r in hit for n in r.unreadable.values())
    more = "+" if any(n is None for r in hit for n in r.unreadable.values()) else ""  # a run that did not count
    text = f"{runs} run{'s' if runs != 1 else ''} skipped (not finished) · {images}{more} "
    text += f"image{'' if images == 1 and not more else 's'} skipped (unreadable"
    return text + (f", in {len(hit)} run{'s' if len(hit) != 1 else ''})" if hit else ")")


def _cell_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    return [
        {
            "dataset": c.dataset,
            "backbone": c.backbone,
            "variant": c.variant,
            "n": c.n,
            "mean": f"{c.mean:.4f}",
            "std": f"{c.std:.4f}",
            "seeds": " ".join(f"{pair_label(s)}:{a:.2f}" for s, a in c.accs.items()),
            "trainable_params": c.trainable_params,
            "setup_id": c.setup_id,
        }
        for c in cells
    ]


def _shares_markdown(shares: list[dict[str, Any]]) -> str:
    rows = ["| backbone | variant | trainable params | share |", "|---|---|---:|---:|"]
    rows += [
        f"| {s['backbone']} | {s['variant']} | {s['trainable_params']:,} | {s['share_pct']:.2f}% of {s['of']} |"
        for s in shares
    ]
    return "\n".join(rows) + "\n"


def _elbow_markdown(fits: list[Any]) -> str:
    from ..analysis.elbow_table import elbow_markdown

    return elbow_markdown(fits)


def build_report(
    results_dir: str | Path, out_dir: str | Path, split_protocols: bool = False, elbow: dict[str, Any] | None = None
) -> Report:
    """Collect, aggregate and write every report file (``elbow``: ``rule``/``delta`` of the elbow section).

    Raises:
        ProtocolMismatchError: runs with different protocols would share a cell (see ``split_protocols``).
        AdapterTuneError: no finished run was found.
    """
    results_dir, out_dir = Path(results_dir), check_output_dir(out_dir)
    records = collect_runs(results_dir, exclude=out_dir)
    for r in records:
        if r.status != "success":
            _logger.warning("skipping run '%s' (%s): %s", r.run, r.status, r.error)
    cells = aggregate(records, split_protocols=split_protocols)
    if not cells:
        raise AdapterTuneError(
            f"No finished run under '{results_dir}' ({len(records)} run folders, none with status success)."
        )
    ensure_output_dir(out_dir)
    gs, shares = gains(cells), param_shares(cells)
    table = markdown_table(cells)
    fits = rank_elbows(cells, **(elbow or {}))
    sections = [
        "## Top-1 test accuracy\n\n" + table,
        "## Data\n\n" + data_markdown(cells) + f"\n{skipped_counts(records)}.\n",
    ]
    if gs:  # a heading only for comparisons that exist
        sections.append(f"## {comparison_title(gs)}\n\n" + gains_markdown(gs))
    sections.append("## Trainable parameters\n\n" + _shares_markdown(shares))
    edges = grid_edge_warnings(cells)
    edge_md = "".join(f"\n- **{w}**" for w in edges)
    searches = search_markdown(cells)  # searches cut by a pruner: what they spent against the full grid
    searches = f"\n\n### Pruned tuning searches\n\n{searches}" if searches else ""
    sections.append(
        "## Learning rates\n\n" + lr_markdown(cells) + "\n" + tuning_note(cells) + "\n" + edge_md + searches
    )
    elbow_md = _elbow_markdown(fits) if fits else ""
    if fits:
        sections.append("## Rank elbow\n\n" + elbow_md)
    placement = placement_rows(cells)
    studies = _studies(records, placement)  # shown only when the results hold an init ablation / placements
    board = write_board(cells, out_dir)  # budget curves, Pareto plot, leaderboard: >= 3 cells with val curves
    studies += [(board.title, board.markdown, board.html)] if board else []
    tables = prediction_tables(cells, gs)  # agreement, ensemble, pooled: where runs wrote predictions
    if per_image := per_image_markdown(tables):
        studies.append(("Per test image: disagreement, ensembles, pooled gains", per_image, markdown_html(per_image)))
    sections += [f"## {title}\n\n{md}" for title, md, _ in studies]
    gs_csv = gs + [r.gain for r in placement if r.gain is not None]  # gains.csv: vs head/full and vs `all`
    md = "\n\n".join(sections)
    report = Report(out_dir, records, cells, table, gains_summary(gs), warnings=edges)
    report.files += board.files if board else []
    written = {
        "results.csv": lambda p: atomic_write_csv(p, results_rows(records)),
        "cells.csv": lambda p: atomic_write_csv(p, _cell_rows(cells)),
        "gains.csv": lambda p: atomic_write_csv(p, gains_rows(gs_csv)),
        "table.md": lambda p: atomic_write_text(p, md.rstrip("\n") + "\n"),
        "table.tex": lambda p: atomic_write_text(p, latex_table(cells)),
    }
    for name, rows in tables.items():
        written[name] = lambda p, rows=rows: atomic_write_csv(p, rows)
    for name, write in written.items():
        write(out_dir / name)
        report.files.append(out_dir / name)
    images = []
    for name, title, plot in _PLOTS:
        path = plot(cells, out_dir / name)
        if path is not None:
            report.files.append(path)
            images.append((title, path))
    path = plot_rank_elbows(fits, out_dir / "rank_elbow.png")
    if path is not None:
        report.files.append(path)
        images.append(("Rank elbow with its bound or interval (the rule is stated with the elbow table)", path))
    html_path = out_dir / "report.html"
    extra = [(title, h) for title, _, h in studies]
    atomic_write_text(html_path, _html(report, results_dir, gs, shares, images, elbow_md, extra))
    report.files.append(html_path)
    return report


def _studies(records: list[RunRecord], placement: list[Any]) -> list[tuple[str, str, str]]:
    """``(title, markdown, html)`` of the init ablation and the placement table, where the results hold them."""
    out = []
    if ablation := init_ablation(records):
        out.append(("Init ablation", ablation_markdown(ablation), ablation_html(ablation)))
    if placement:
        out.append(("Placement at matched parameters", placement_markdown(placement), placement_html(placement)))
    return out


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}
td.best{font-weight:bold;background:#e8f5e9}
img{max-width:100%;border:1px solid #ddd}.bad{color:#b00}code{background:#f6f6f6;padding:1px 4px}"""


def _protocols_html(cells: list[Cell]) -> str:
    protocols: dict[str, dict[str, Any]] = {}
    for c in cells:
        key = json.dumps(c.runs[0].protocol, sort_keys=True)
        protocols.setdefault(key, c.runs[0].protocol)
    cols = list(protocols.values())
    keys = sorted({k for p in cols for k in p})
    head = "".join(f"<th>protocol {i + 1}</th>" for i in range(len(cols)))
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td>"
        + "".join(f"<td>{html.escape(plain(p[k]) if k in p else '-')}</td>" for p in cols)
        + "</tr>"
        for k in keys
    )
    return f"<table><tr><th>field</th>{head}</tr>{rows}</table>"


def _data_html(cells: list[Cell]) -> str:
    rows = data_rows(cells)
    head = "".join(f"<th>{html.escape(k.replace('_pct', ' %'))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    note = html.escape(DATA_NOTE.removesuffix(".")) + ", drawn as a dotted line in the plots."
    return f"<h2>Data</h2><p>{note}</p><table><tr>{head}</tr>{body}</table>"


def _html(
    report: Report,
    results_dir: Path,
    gs: list[Any],
    shares: list[dict[str, Any]],
    images: list[tuple[str, Path]],
    elbow_md: str = "",
    extra: list[tuple[str, str]] | None = None,
) -> str:
    esc = html.escape
    ok = sum(r.status == "success" for r in report.records)
    selection = ", ".join(sorted({str(c.runs[0].protocol.get("selection", "?")) for c in report.cells}))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>adaptertune report</title><style>{_CSS}</style>",
        "</head><body><h1>adaptertune report</h1>",
        f"<p>Results: <code>{esc(str(results_dir))}</code> &middot; {ok} finished runs in {len(report.cells)} "
        f"cells &middot; {esc(skipped_counts(report.records))} &middot; generated "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        f"<h2>Top-1 test accuracy (%)</h2><p>Mean ± std over {esc(replicates(report.cells))} (checkpoint selection: "
        f"{esc(selection)}); "
        "best per row in bold.</p>",
        html_table(report.cells),
        _data_html(report.cells),
    ]
    if gs:
        parts.append(f"<h2>{esc(comparison_title(gs))}</h2><ul>")
        parts += [f"<li>{esc(line)}</li>" for line in gains_summary(gs, rule=False)]
        parts.append(
            f"</ul><p>{esc(WIN_RULE)}</p><table><tr><th>dataset</th><th>backbone</th><th>variant</th><th>vs</th>"
        )
        parts.append("<th>gain (points)</th><th>95% CI (t)</th><th>95% CI (bootstrap)</th><th>verdict</th>")
        cols = noise_columns(gs)  # seeds + test-images columns where predictions exist
        parts.append("<th>seeds won</th><th>paired seeds</th>" + "".join(f"<th>{esc(h)}</th>" for h in cols) + "</tr>")
        parts += [
            f"<tr><td>{esc(g.dataset)}</td><td>{esc(g.backbone)}</td><td>{esc(g.variant)}</td>"
            f"<td>{esc(g.baseline)}</td><td>{g.delta:+.2f}</td><td>{esc(interval_text(*g.ci))}</td>"
            f"<td>{esc(interval_text(*g.boot))}</td><td>{esc(g.verdict)}</td><td>{g.seeds_won}/{g.seeds_shared}</td>"
            f"<td>{g.seeds_shared}"
            + (f" (+{g.seeds_unpaired} unpaired)" if g.seeds_unpaired else "")
            + "</td>"
            + "".join(f"<td>{esc(col[i])}</td>" for col in cols.values())
            + "</tr>"
            for i, g in enumerate(gs)
        ]
        parts.append("</table>" + (f"<p>{esc(noise_rule(gs))}</p>" if cols else ""))
    parts.append("<h2>Trainable parameters</h2><table><tr><th>backbone</th><th>variant</th>")
    parts.append("<th>trainable params</th><th>share</th></tr>")
    parts += [
        f"<tr><td>{esc(s['backbone'])}</td><td>{esc(s['variant'])}</td><td>{s['trainable_params']:,}</td>"
        f"<td>{s['share_pct']:.2f}% of {esc(s['of'])}</td></tr>"
        for s in shares
    ]
    parts.append("</table>")
    if elbow_md:
        rows = [line.strip("|").split("|") for line in elbow_md.splitlines() if line.startswith("| ")]
        parts.append("<h2>Rank elbow</h2><p>" + esc(" ".join(elbow_md.split("\n\n")[0].splitlines())) + "</p><table>")
        parts += [
            "<tr>" + "".join(f"<{t}>{esc(v.strip())}</{t}>" for v in row) + "</tr>"
            for i, row in enumerate(rows)
            for t in ["th" if i == 0 else "td"]
        ]
        parts.append("</table>")
    parts += [f"<h2>{esc(title)}</h2>{body}" for title, body in extra or []]
    for title, path in images:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Protocol</h2>" + _protocols_html(report.cells))
    parts.append("<h3>Learning rate per variant</h3><table><tr><th>dataset</th><th>backbone</th><th>variant</th>")
    parts.append("<th>lr</th><th>how it was set</th></tr>")
    parts += [
        "<tr>"
        + "".join(f"<td>{esc(str(r[k]))}</td>" for k in ("dataset", "backbone", "variant", "lr", "selection"))
        + "</tr>"
        for r in lr_rows(report.cells)
    ]
    parts.append(f"</table><p>{esc(tuning_note(report.cells))}</p>")
    if searches := search_markdown(report.cells):
        parts.append("<h3>Pruned tuning searches</h3>" + markdown_html(searches))
    parts += [f"<p class='bad'>{esc(w)}</p>" for w in report.warnings]
    if report.problems:
        parts.append("<h2 class='bad'>Runs skipped (not finished)</h2><ul>")
        parts += [f"<li><code>{esc(r.run)}</code>: {esc(r.status)}: {esc(r.error)}</li>" for r in report.problems]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
