"""Tables as CSV (fractions in [0, 1]), Markdown and LaTeX (percent where asked), written atomically."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from defectcam.io import atomic_path, write_text


def format_value(value: object, percent: bool = False, digits: int = 2) -> str:
    """A cell as text: NaN as '-', fractions as percent when asked, floats rounded."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if percent:
            return f"{100 * value:.{digits}f}"
        return f"{value:.{digits}f}" if abs(value) >= 1 else f"{value:.{digits + 2}f}"
    return str(value)


def with_intervals(table: pd.DataFrame, scores: Sequence[str], percent: bool = True, digits: int = 1) -> pd.DataFrame:
    """A copy where each score with `<score>_ci_low/_ci_high` columns reads 'value [low, high]' (text),
    the interval columns dropped; other columns untouched. For Markdown, LaTeX and HTML."""
    shown = table.copy()
    for score in scores:
        low, high = f"{score}_ci_low", f"{score}_ci_high"
        if score not in shown or low not in shown or high not in shown:
            continue
        shown[score] = [_interval_text(v, lo, hi, percent, digits) for v, lo, hi in zip(shown[score], shown[low], shown[high])]
        shown = shown.drop(columns=[low, high])
    return shown


def _interval_text(value: float, low: float, high: float, percent: bool, digits: int) -> str:
    scale = 100.0 if percent else 1.0
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high)):
        return f"{scale * value:.{digits}f}"
    return f"{scale * value:.{digits}f} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def _rows(table: pd.DataFrame) -> list[list[object]]:
    """Cells row by row with each column's own dtype (iterrows would turn ints into floats)."""
    return [[table[c].iat[i] for c in table.columns] for i in range(len(table))]


def to_markdown(table: pd.DataFrame, percent_columns: Sequence[str] = ()) -> str:
    """A GitHub-flavoured Markdown table."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    lines = [header, rule]
    for row in _rows(table):
        lines.append("| " + " | ".join(format_value(v, c in percent_columns) for c, v in zip(table.columns, row)) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str, label: str, percent_columns: Sequence[str] = ()) -> str:
    """A booktabs LaTeX table."""
    escape = str.maketrans({"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#"})
    columns = "l" * 1 + "r" * (len(table.columns) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption.translate(escape)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(str(c).translate(escape) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for row in _rows(table):
        lines.append(" & ".join(format_value(v, c in percent_columns).translate(escape) for c, v in zip(table.columns, row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    table: pd.DataFrame,
    folder: Path,
    stem: str,
    caption: str,
    display: pd.DataFrame | None = None,
    percent_columns: Sequence[str] = (),
) -> None:
    """stem.csv from `table`; stem.md and stem.tex from `display` (default: the same table)."""
    display = table if display is None else display
    with atomic_path(folder / f"{stem}.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(folder / f"{stem}.md", f"**{caption}**\n\n" + to_markdown(display, percent_columns))
    write_text(folder / f"{stem}.tex", to_latex(display, caption, f"tab:{stem}", percent_columns))
