"""Parser for DAGM 2007 `Label/Labels.txt` files, tolerant of the quirks seen in the wild."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from defectcam.errors import DatasetError

# A data row starts with an index and a 0/1 defect flag. The first non-blank line may be something else (the
# release's header); any later line that is not a row is an error, not a second header to skip.
_ROW_START = re.compile(r"^\d+\s+[01]\s+")


@dataclass(frozen=True)
class LabelRow:
    """One row of Labels.txt: the image file name, its defect flag and its mask file name."""

    line_number: int
    defective: bool
    image_name: str
    mask_name: str | None


def parse_labels(path: str | Path) -> list[LabelRow]:
    """Read a Labels.txt file (BOM, CRLF, trailing blanks tolerated) into its data rows."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: Labels.txt is missing")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if lines and not _ROW_START.match(lines[0][1]):
        lines = lines[1:]  # the header
    rows = []
    for number, line in lines:
        if not _ROW_START.match(line):
            raise DatasetError(f"{path}:{number}: not a label row (expected '<index> <0 or 1> <image> 0 <mask or 0>'), "
                               f"got {line!r}")
        rows.append(_parse_row(path, number, line))
    if not rows:
        raise DatasetError(f"{path}: no label rows (expected lines like '1<TAB>0<TAB>0001.PNG<TAB>0<TAB>0')")
    return rows


def _parse_row(path: Path, number: int, line: str) -> LabelRow:
    fields = line.split()
    if len(fields) < 3:
        raise DatasetError(f"{path}:{number}: expected at least 3 columns (index, flag, image name), got {line.strip()!r}")
    defective = fields[1] == "1"
    # Column 4 is always 0; column 5 names the mask, or is '0' / absent for defect-free rows.
    mask_name = fields[4] if len(fields) >= 5 and fields[4] != "0" else None
    if defective and mask_name is None:
        raise DatasetError(f"{path}:{number}: defective image {fields[2]} has no mask file name")
    if not defective and mask_name is not None:
        raise DatasetError(f"{path}:{number}: defect-free image {fields[2]} names a mask ({mask_name})")
    return LabelRow(line_number=number, defective=defective, image_name=fields[2], mask_name=mask_name)
