"""One self-contained HTML page: tables, CAM grids and threshold curves (images inlined as base64)."""

from __future__ import annotations

import base64
import html
import io
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

# Tables wrap inside the page's width (never a sideways scroll bar at 1400 px): cells break at spaces
# ("67.8 [64.5, 70.8]" onto two lines), long names anywhere; the widest tables sit in <details>.
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:1em 0;max-width:100%}
th,td{border:1px solid #ccc;padding:2px 5px;text-align:right;overflow-wrap:anywhere}
th{background:#f3f3f3;font-weight:600}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:13px}h2{border-bottom:1px solid #ddd;padding-bottom:4px}summary{cursor:pointer;color:#2a5db0}
.heat td{min-width:64px}.lead{font-size:15px;background:#f7f9fc;border-left:4px solid #4a7bd0;padding:6px 12px}
"""


# CAM grids and overlay strips are photographs of textures: as PNG they made a 6-problem report 35 MB. A JPEG at
# this quality is a quarter of that and looks the same at page size; line drawings (threshold curves) gain less
# and keep their PNG. The PNG on disk stays the lossless original, linked under each figure.
JPEG_QUALITY = 92
JPEG_WHEN_AT_MOST = 0.5  # the JPEG is inlined only when it is at most this fraction of the PNG's size


def inline_image(png: bytes) -> tuple[str, bytes]:
    """(MIME type, bytes) to inline for a PNG: itself, or a JPEG of it when that is much smaller."""
    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    jpeg = buffer.getvalue()
    return ("image/jpeg", jpeg) if len(jpeg) <= JPEG_WHEN_AT_MOST * len(png) else ("image/png", png)


def image_tag(path: Path, alt: str, page_dir: Path | None = None) -> str:
    """An <img> with the figure inlined (see inline_image), or a note when the file is absent; with `page_dir`
    (the folder of the page), the caption links the PNG itself by its path relative to the page."""
    if not path.is_file():
        return f'<p class="note">({html.escape(alt)}: not produced)</p>'
    mime, payload = inline_image(path.read_bytes())
    data = base64.b64encode(payload).decode()
    link = ""
    if page_dir is not None:
        href = urllib.parse.quote(Path(os.path.relpath(path, page_dir)).as_posix())  # a '#' or '?' in a folder name
        link = f' (<a href="{html.escape(href)}">{html.escape(href)}</a>)'
    return (f'<figure><img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'
            f'<figcaption class="note">{html.escape(alt)}{link}</figcaption></figure>')


def table_html(table: pd.DataFrame, percent: bool | Sequence[str] = False) -> str:
    """A DataFrame as an HTML table; fractions shown as percent in the named columns (all floats if True)."""
    shown = table.copy()
    for column in shown.columns:
        if not pd.api.types.is_float_dtype(shown[column]):
            continue
        as_percent = percent is True or (not isinstance(percent, bool) and column in percent)
        shown[column] = [("-" if pd.isna(v) else f"{100 * v:.2f}" if as_percent else f"{v:.4g}") for v in shown[column]]
    return shown.to_html(index=False, na_rep="-", border=0)


def collapsible(summary: str, content: str, open_: bool = False) -> str:
    """A <details> section: `summary` as its one-line title, `content` shown when opened (open_: shown at first)."""
    return f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>\n{content}\n</details>"


def heat_table_html(matrix: pd.DataFrame, caption: str) -> str:
    """A method x layer matrix of fractions as an HTML table, each cell shaded by its value (white 0 -> green 1)."""
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in matrix.columns)
    body = []
    for method, row in matrix.iterrows():
        cells = []
        for value in row:
            if pd.isna(value):
                cells.append("<td>-</td>")
                continue
            shade = int(255 - 140 * max(0.0, min(1.0, float(value))))
            cells.append(f"<td style='background:rgb({shade},255,{shade})'>{100 * value:.1f}</td>")
        body.append(f"<tr><td>{html.escape(str(method))}</td>{''.join(cells)}</tr>")
    return (f"<table class='heat'><caption class='note'>{html.escape(caption)}</caption>"
            f"<tr><th>method</th>{header}</tr>{''.join(body)}</table>")


def report_page(title: str, sections: list[tuple[str, str]]) -> str:
    """The page from (heading, html body) sections."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{content}" for h, content in sections)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
