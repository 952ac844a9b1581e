"""index_dagm on well-formed and malformed trees; every error names the offending file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dagm_tree import make_split, make_tree, write_png
from defectcam.data.dagm import COLUMNS, index_dagm
from defectcam.errors import DatasetError


def test_index_columns_and_counts(dagm_root: Path) -> None:
    table = index_dagm(dagm_root)
    assert list(table.columns) == COLUMNS
    assert set(table["split"]) == {"Train", "Test"} and len(table) == 40
    assert table["label"].sum() == 10
    defective = table[table["label"] == 1]
    assert defective["mask_path"].map(lambda p: Path(p).is_file()).all()
    assert table.loc[table["label"] == 0, "mask_path"].isna().all()
    assert table["problem"].unique().tolist() == [1]


def test_problems_filter_and_discovery(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "D", problems=(1, 3), n_train=8, n_test=8)
    assert sorted(index_dagm(root)["problem"].unique()) == [1, 3]
    assert index_dagm(root, [3])["problem"].unique().tolist() == [3]


def test_quirks_bom_crlf_lowercase_and_thumbs_db(tmp_path: Path) -> None:
    split = tmp_path / "D" / "Class2" / "Train"
    make_split(split, 2, 1, 8, {1, 5}, line_end="\r\n", bom=True, ext=".png")
    make_split(tmp_path / "D" / "Class2" / "Test", 2, 9, 8, {0})
    (split / "Thumbs.db").write_bytes(b"junk")
    (split / "Label" / "Thumbs.db").write_bytes(b"junk")
    table = index_dagm(tmp_path / "D")
    assert len(table) == 16 and table["label"].sum() == 3
    assert table["image_path"].str.endswith(".png").sum() == 8


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere: DAGM root folder does not exist"):
        index_dagm(tmp_path / "nowhere")


def test_missing_class(dagm_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"Class4: problem 4 folder is missing"):
        index_dagm(dagm_root, [1, 4])


def test_missing_train_folder(dagm_root: Path) -> None:
    shutil.rmtree(dagm_root / "Class1" / "Train")
    with pytest.raises(DatasetError, match=r"Class1/Train: Train folder is missing"):
        index_dagm(dagm_root)


def test_missing_labels_file(dagm_root: Path) -> None:
    (dagm_root / "Class1" / "Test" / "Label" / "Labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"Test/Label/Labels.txt: Labels.txt is missing"):
        index_dagm(dagm_root)


def test_row_whose_image_is_missing(dagm_root: Path) -> None:
    (dagm_root / "Class1" / "Test" / "0002.PNG").unlink()
    with pytest.raises(DatasetError, match=r"Test/0002.PNG: image listed in .*Labels.txt:3 is missing"):
        index_dagm(dagm_root)


def test_defective_row_whose_mask_is_missing(dagm_root: Path) -> None:
    (dagm_root / "Class1" / "Test" / "Label" / "0001_label.PNG").unlink()
    with pytest.raises(DatasetError, match=r"0001_label.PNG: mask listed in .*Labels.txt:2 is missing"):
        index_dagm(dagm_root)


def test_mask_that_no_row_claims(dagm_root: Path) -> None:
    write_png(dagm_root / "Class1" / "Test" / "Label" / "0003_label.PNG", np.zeros((32, 32)))
    with pytest.raises(DatasetError, match=r"0003_label.PNG: mask file that no row of Labels.txt claims"):
        index_dagm(dagm_root)


def test_image_that_no_row_lists(dagm_root: Path) -> None:
    write_png(dagm_root / "Class1" / "Test" / "0999.PNG", np.zeros((32, 32)))
    with pytest.raises(DatasetError, match=r"0999.PNG: image that Labels.txt does not list"):
        index_dagm(dagm_root)
