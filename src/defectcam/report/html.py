"""One self-contained HTML page: tables, CAM grids and threshold curves (images inlined as base64)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:13px}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
"""


def image_tag(path: Path, alt: str) -> str:
    """An <img> with the PNG inlined, or a note when the file is absent."""
    if not path.is_file():
        return f'<p class="note">({html.escape(alt)}: not produced)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption class="note">{html.escape(alt)}</figcaption></figure>'


def table_html(table: pd.DataFrame, percent: bool = False) -> str:
    """A DataFrame as an HTML table, fractions shown as percent when asked."""
    fmt = (lambda v: f"{100 * v:.2f}") if percent else (lambda v: f"{v:.4g}")
    return table.to_html(index=False, float_format=fmt, na_rep="-", border=0)


def report_page(title: str, sections: list[tuple[str, str]]) -> str:
    """The page from (heading, html body) sections."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{content}" for h, content in sections)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
