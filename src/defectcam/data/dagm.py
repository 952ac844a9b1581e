"""Index a DAGM 2007 tree (`ClassN/{Train,Test}/*.PNG` + `Label/`) into one table, checking its structure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from defectcam.data.labels import LabelRow, parse_labels
from defectcam.errors import DatasetError

SPLITS = ("Train", "Test")
COLUMNS = ["image_id", "problem", "split", "image_path", "mask_path", "label"]
_CLASS_DIR = re.compile(r"^Class(\d+)$")


def index_dagm(root: str | Path, problems: Iterable[int] | None = None) -> pd.DataFrame:
    """One row per image: problem, split (Train/Test), image_path, mask_path (None if defect-free), label."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: DAGM root folder does not exist")
    wanted = sorted(set(problems)) if problems is not None else discover_problems(root)
    records = [
        record
        for problem in wanted
        for split in SPLITS
        for record in _index_split(_split_dir(root, problem, split), problem, split)
    ]
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def labels_file(root: str | Path, problem: int, split: str) -> Path:
    """The Labels.txt that index_dagm reads for one problem's split (the same case-insensitive lookup)."""
    split_dir = _split_dir(Path(root), problem, split)
    return _labels_path(split_dir, _find_child(split_dir, "Label"))


def discover_problems(root: Path) -> list[int]:
    """The class numbers of the `ClassN` folders under root."""
    found = sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _CLASS_DIR.match(p.name)))
    if not found:
        raise DatasetError(f"{root}: no ClassN folders (expected e.g. {root / 'Class1' / 'Train'})")
    return found


def _split_dir(root: Path, problem: int, split: str) -> Path:
    class_dir = root / f"Class{problem}"
    if not class_dir.is_dir():
        raise DatasetError(f"{class_dir}: problem {problem} folder is missing")
    split_dir = _find_child(class_dir, split)
    if split_dir is None or not split_dir.is_dir():
        raise DatasetError(f"{class_dir / split}: {split} folder is missing")
    return split_dir


def _labels_path(split_dir: Path, label_dir: Path | None) -> Path:
    """The split's Label/Labels.txt (`label_dir`: its Label folder, None when missing), names matched
    case-insensitively; the release's spelling when it is not there, for parse_labels to name in its error."""
    found = _find_child(label_dir, "Labels.txt") if label_dir else None
    return found or split_dir / "Label" / "Labels.txt"


def _index_split(split_dir: Path, problem: int, split: str) -> list[dict[str, object]]:
    label_dir = _find_child(split_dir, "Label")
    labels_path = _labels_path(split_dir, label_dir)
    rows = parse_labels(labels_path)
    images = _png_files(split_dir)
    masks = _png_files(label_dir) if label_dir else {}
    claimed_masks: set[str] = set()
    claimed_images: set[str] = set()
    records = []
    for row in rows:
        image = _claim(images, row.image_name, claimed_images, split_dir, labels_path, row)
        mask = _claim(masks, row.mask_name, claimed_masks, split_dir / "Label", labels_path, row) if row.mask_name else None
        records.append(
            {
                "image_id": f"Class{problem}/{split}/{Path(image).stem}",
                "problem": problem,
                "split": split,
                "image_path": str(image),
                "mask_path": str(mask) if mask else None,
                "label": int(row.defective),
            }
        )
    _reject_unclaimed(masks, claimed_masks, "mask file that no row of Labels.txt claims", labels_path)
    _reject_unclaimed(images, claimed_images, "image that Labels.txt does not list", labels_path)
    return records


def _claim(files: dict[str, Path], name: str, claimed: set[str], folder: Path, labels: Path, row: LabelRow) -> Path:
    key = name.lower()
    if key not in files:
        what = "mask" if name.lower().endswith("_label.png") else "image"
        raise DatasetError(f"{folder / name}: {what} listed in {labels}:{row.line_number} is missing")
    if key in claimed:
        raise DatasetError(f"{labels}:{row.line_number}: {name} is listed twice")
    claimed.add(key)
    return files[key]


def _reject_unclaimed(files: dict[str, Path], claimed: set[str], what: str, labels: Path) -> None:
    extra = sorted(set(files) - claimed)
    if extra:
        raise DatasetError(f"{files[extra[0]]}: {what} ({labels})")


def _png_files(folder: Path) -> dict[str, Path]:
    """PNG files of a folder keyed by lower-case name; `.PNG` and `.png` alike, Thumbs.db and the like ignored."""
    return {p.name.lower(): p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png"}


def _find_child(folder: Path | None, name: str) -> Path | None:
    """The child of folder called name, matched case-insensitively (exact match preferred)."""
    if folder is None:
        return None
    exact = folder / name
    if exact.exists():
        return exact
    return next((p for p in folder.iterdir() if p.name.lower() == name.lower()), None)
