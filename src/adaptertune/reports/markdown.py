"""A report section's Markdown as HTML: the few constructs the report writes (``###`` headings, pipe tables,
paragraphs, ``**bold**``), everything else escaped."""

from __future__ import annotations

import html
import re

__all__ = ["markdown_html"]


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text.strip()))


def markdown_html(md: str) -> str:
    """A report section's Markdown (headings, pipe tables, paragraphs) as HTML."""
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if set(line) <= set("|-: "):  # the separator row
                continue
            tag = "td" if in_table else "th"
            row = "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells)
            out.append(("" if in_table else "<table>") + f"<tr>{row}</tr>")
            in_table = True
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("### "):
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out + (["</table>"] if in_table else []))
