"""Progress bars and tables for the terminal (tqdm on stderr)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["TqdmProgress", "add_json_option", "emit_json", "emit_text", "format_table", "print_skipped"]


class TqdmProgress:
    """Engine callback: one bar over all steps, one line per epoch."""

    def __init__(self, desc: str = "train", enabled: bool = True) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_steps,
                initial=start_step,  # a resumed run continues the bar
                desc=self.desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def on_step(self, step: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)

    def on_epoch_end(self, m: dict[str, Any]) -> None:
        if not self.enabled:
            return
        val = f" val {m['val_acc']:.2f}%" if "val_acc" in m else ""
        line = (
            f"epoch {m['epoch']}: loss {m['train_loss']:.4f} train {m['train_acc']:.2f}%{val} "
            f"({m['epoch_seconds']:.1f}s, {m['train_images_per_second']:.0f} img/s)"
        )
        (self.bar.write(line, file=sys.stderr) if self.bar is not None else print(line, file=sys.stderr))
        if self.bar is not None and self.bar.n >= self.bar.total:
            self.bar.close()


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Plain aligned text table."""
    if not rows:
        return "(empty)"
    columns = columns or list(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def add_json_option(p: Any, what: str) -> None:
    """``--json FILE|-``, the same on every command that has it: ``what`` as JSON to FILE, or with ``-`` alone on
    stdout (the command's tables and notes then go to stderr; see :func:`emit_json`)."""
    p.add_argument(
        "--json", default=None, metavar="FILE|-", help=f"write {what} as JSON to FILE (-: to stdout, tables to stderr)"
    )


def emit_json(target: str, obj: Any, stream: Any = None) -> None:
    """Write ``obj`` as JSON to the file ``target``, or with ``target`` ``-`` to ``stream`` (the real stdout,
    which :func:`~adaptertune.cli.main.main` keeps pure JSON by sending the command's tables to stderr)."""
    import json

    emit_text(target, json.dumps(obj, indent=2) + "\n", stream)


def emit_text(target: str, text: str, stream: Any = None) -> None:
    """Write ``text`` to the file ``target`` atomically (a failed write leaves no partial file), or with
    ``target`` ``-`` to ``stream`` (see :func:`emit_json`)."""
    from ..atomic import atomic_write_text

    if target == "-":
        (stream or sys.stdout).write(text)
        return
    atomic_write_text(target, text)
    print(f"wrote {target}")


def print_skipped(skipped: list[dict[str, Any]], total: int) -> None:
    """The images predict could not read, one line each, and their count (on stderr)."""
    for r in skipped:
        print(f"skipped {r['image']}: {r['error']}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} unreadable of {total} images", file=sys.stderr)
