"""Labels.txt parsing: each quirk of the wild on its own, and each malformed case."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectcam.data.labels import parse_labels
from defectcam.errors import DatasetError

GOOD_ROWS = "1\t0\t0001.PNG\t0\t0\n2\t1\t0002.PNG\t0\t0002_label.PNG\n"


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "Labels.txt"
    path.write_bytes(data)
    return path


def names(path: Path) -> list[tuple[bool, str, str | None]]:
    return [(r.defective, r.image_name, r.mask_name) for r in parse_labels(path)]


EXPECTED = [(False, "0001.PNG", None), (True, "0002.PNG", "0002_label.PNG")]


def test_header_line_is_skipped(tmp_path: Path) -> None:
    assert names(write(tmp_path, ("Class1\n" + GOOD_ROWS).encode())) == EXPECTED


def test_numeric_header_is_skipped(tmp_path: Path) -> None:
    # A header holding only the class number does not look like a row (no flag and file name).
    assert names(write(tmp_path, ("7\n" + GOOD_ROWS).encode())) == EXPECTED


def test_utf8_bom(tmp_path: Path) -> None:
    assert names(write(tmp_path, b"\xef\xbb\xbf" + ("Class1\n" + GOOD_ROWS).encode())) == EXPECTED


def test_bom_directly_before_first_row(tmp_path: Path) -> None:
    assert names(write(tmp_path, b"\xef\xbb\xbf" + GOOD_ROWS.encode())) == EXPECTED


def test_crlf_line_endings(tmp_path: Path) -> None:
    assert names(write(tmp_path, ("Class1\r\n" + GOOD_ROWS.replace("\n", "\r\n")).encode())) == EXPECTED


def test_trailing_whitespace_and_blank_lines(tmp_path: Path) -> None:
    text = "Class1  \n\n1\t0\t0001.PNG\t0\t0   \n2\t1\t0002.PNG\t0\t0002_label.PNG \t\n\n   \n"
    assert names(write(tmp_path, text.encode())) == EXPECTED


def test_mask_column_absent_for_defect_free_rows(tmp_path: Path) -> None:
    text = "Class1\n1\t0\t0001.PNG\t0\n2\t1\t0002.PNG\t0\t0002_label.PNG\n3\t0\t0003.PNG\n"
    assert names(write(tmp_path, text.encode()))[0] == (False, "0001.PNG", None)
    assert names(write(tmp_path, text.encode()))[2] == (False, "0003.PNG", None)


def test_image_names_come_from_the_file_column(tmp_path: Path) -> None:
    text = "Class1\n1\t0\t0576.PNG\t0\t0\n2\t1\t0577.PNG\t0\t0577_label.PNG\n"
    assert [r.image_name for r in parse_labels(write(tmp_path, text.encode()))] == ["0576.PNG", "0577.PNG"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Labels.txt is missing"):
        parse_labels(tmp_path / "Labels.txt")


def test_no_rows(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no label rows"):
        parse_labels(write(tmp_path, b"Class1\n\n"))


def test_defective_row_without_mask_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"Labels.txt:2: defective image 0002.PNG has no mask"):
        parse_labels(write(tmp_path, b"Class1\n2\t1\t0002.PNG\t0\t0\n"))


def test_defect_free_row_naming_a_mask(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="defect-free image 0001.PNG names a mask"):
        parse_labels(write(tmp_path, b"Class1\n1\t0\t0001.PNG\t0\t0001_label.PNG\n"))


def test_binary_garbage(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a text file"):
        parse_labels(write(tmp_path, b"\xff\xfe\x00\x81garbage"))


@pytest.mark.parametrize(
    ("bad_row", "what"),
    [("3\t2\t0003.PNG\t0\t0", "a defect flag that is not 0 or 1"), ("3\t1", "a row cut short"), ("0003.PNG\t0", "no index")],
)
def test_a_malformed_row_after_the_header_is_named_not_skipped(tmp_path: Path, bad_row: str, what: str) -> None:
    """Skipped as a second header, such a row once surfaced later as 'a mask that no row claims'."""
    path = write(tmp_path, ("Class1\n" + GOOD_ROWS + bad_row + "\n").encode())
    with pytest.raises(DatasetError, match=rf"Labels\.txt:4: not a label row .*{bad_row.split()[0]}"):
        parse_labels(path)
