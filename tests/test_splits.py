"""Splits: reproducible for a seed, disjoint, defects in every part, the study's 805/172/173, changes detected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from defectcam.data.dagm import index_dagm
from defectcam.data.prepare import SplitSettings, ensure_split
from defectcam.data.splits import make_split
from defectcam.errors import ConfigError

OFFICIAL = SplitSettings(kind="official", seed=0, val_fraction=0.25, test_fraction=0.15)


def dagm_like(n_per_split: int = 575, defects: tuple[int, int] = (71, 79)) -> pd.DataFrame:
    rows = []
    for split, n_def in zip(("Test", "Train"), defects):
        rows += [{"problem": 1, "source_split": split, "label": int(i < n_def), "image_id": f"{split}/{i}"} for i in range(n_per_split)]
    return pd.DataFrame(rows)


def test_paper_split_counts_and_strata() -> None:
    parts = make_split(dagm_like(), "paper", seed=0, val_fraction=0.15, test_fraction=0.15)
    assert parts.value_counts().to_dict() == {"train": 805, "test": 173, "val": 172}
    defects = dagm_like().groupby(parts)["label"].sum()
    assert (defects > 0).all() and abs(defects["val"] - defects["test"]) <= 1


def test_official_split_keeps_dagm_test_as_test() -> None:
    table = dagm_like()
    parts = make_split(table, "official", seed=3, val_fraction=0.2)
    assert (parts[table["source_split"] == "Test"] == "test").all()
    assert set(parts[table["source_split"] == "Train"]) == {"train", "val"}
    assert (parts == "val").sum() == 115


def test_seed_changes_the_split_and_same_seed_repeats_it() -> None:
    table = dagm_like()
    a, b = (make_split(table, "paper", seed=0, val_fraction=0.15) for _ in range(2))
    c = make_split(table, "paper", seed=1, val_fraction=0.15)
    assert a.equals(b) and not a.equals(c)


def test_unknown_split_kind() -> None:
    with pytest.raises(ConfigError, match="data.split: 'halves' is not one of official, paper"):
        make_split(dagm_like(), "halves", seed=0, val_fraction=0.2)


def test_split_csv_written_once_and_reused(dagm_root: Path, tmp_path: Path) -> None:
    index = index_dagm(dagm_root)
    first = ensure_split(index, tmp_path / "p1", OFFICIAL)
    text = (tmp_path / "p1" / "split.csv").read_bytes()
    again = ensure_split(index, tmp_path / "p1", OFFICIAL)
    assert (tmp_path / "p1" / "split.csv").read_bytes() == text
    assert first.equals(again)
    assert first["image_id"].is_unique  # no image in two parts
    assert (first.groupby("part")["label"].sum() > 0).all()
    other = ensure_split(index, tmp_path / "p2", OFFICIAL)
    assert other.equals(first)  # same seed, same split, in another folder


def test_changed_setting_is_detected_not_mixed(dagm_root: Path, tmp_path: Path) -> None:
    index = index_dagm(dagm_root)
    ensure_split(index, tmp_path / "p1", OFFICIAL)
    with pytest.raises(ConfigError, match=r"split.json: .*seed was 0, now 5"):
        ensure_split(index, tmp_path / "p1", SplitSettings("official", 5, 0.25, 0.15))


def test_the_split_reads_labels_never_masks(tmp_path: Path) -> None:
    """Weak supervision: train masks must not reach the decoder, so they must not choose the train part either (a
    split stratified by defect area would). Two trees alike but for their masks, whose areas run in opposite orders
    (the largest defect of one is the smallest of the other), split alike."""
    import numpy as np

    from dagm_tree import make_tree, write_png

    def redrawn(root: Path, reverse: bool) -> pd.Series:
        make_tree(root, n_train=40, n_test=20)
        masks = sorted((root / "Class1").glob("*/Label/*_label.PNG"))
        assert len(masks) == 15
        for number, path in enumerate(masks):
            rows = 2 + (len(masks) - 1 - number if reverse else number)
            mask = np.zeros((32, 32), np.uint8)
            mask[number % 8: number % 8 + rows, 2:20] = 255  # area 18 x rows, at another place for each
            write_png(path, mask)
        return ensure_split(index_dagm(root), tmp_path / f"split_{root.name}", OFFICIAL).set_index("image_id")["part"]

    assert redrawn(tmp_path / "growing", reverse=False).equals(redrawn(tmp_path / "shrinking", reverse=True))
