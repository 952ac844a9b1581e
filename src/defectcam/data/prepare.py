"""Per-problem data preparation, done once and reused: the split (split.csv) and the decoded uint8 cache."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from defectcam.data.images import read_gray, read_mask, resize_image, resize_mask
from defectcam.data.splits import make_split
from defectcam.errors import ConfigError
from defectcam.io import atomic_path, read_json, write_json


@dataclass(frozen=True)
class SplitSettings:
    """What decides a split; recorded beside split.csv so a changed setting is detected."""

    kind: str
    seed: int
    val_fraction: float
    test_fraction: float


@dataclass(frozen=True)
class ProblemData:
    """One problem's split table (row order = cache order) and its decoded images and masks."""

    problem: int
    table: pd.DataFrame  # image_id, problem, source_split, part, label, image_path, mask_path, mask_row
    images: np.ndarray  # (N, S, S) uint8
    masks: np.ndarray  # (M, S, S) bool, one per defective row (see table.mask_row)

    @cached_property
    def mask_rows(self) -> np.ndarray:
        """table.mask_row as an array (looked up once per image per epoch)."""
        return self.table["mask_row"].to_numpy()

    def mask_of(self, row: int) -> np.ndarray:
        """The (S, S) bool mask of a table row (all False for a defect-free image)."""
        mask_row = int(self.mask_rows[row])
        if mask_row < 0:
            return np.zeros(self.images.shape[1:], dtype=bool)
        return self.masks[mask_row]


def problem_dir(output_dir: str | Path, problem: int) -> Path:
    """Where every stage writes the files of one problem."""
    return Path(output_dir) / f"problem_{problem}"


def ensure_split(index: pd.DataFrame, out_dir: Path, settings: SplitSettings) -> pd.DataFrame:
    """Write split.csv once for this problem; later calls reuse it and refuse a changed setting or dataset."""
    split_csv, split_json = out_dir / "split.csv", out_dir / "split.json"
    recorded = {**asdict(settings), "fingerprint": _fingerprint(index)}
    if split_csv.is_file() and split_json.is_file():
        _check_recorded(split_json, read_json(split_json), recorded)
        return pd.read_csv(split_csv, keep_default_na=False, na_values={"mask_path": [""]})
    table = index.rename(columns={"split": "source_split"}).reset_index(drop=True)
    table.insert(3, "part", make_split(table, settings.kind, settings.seed, settings.val_fraction, settings.test_fraction))
    is_defective = table["mask_path"].notna()
    table["mask_row"] = np.where(is_defective, is_defective.cumsum() - 1, -1)
    with atomic_path(split_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_json(split_json, recorded)
    return pd.read_csv(split_csv, keep_default_na=False, na_values={"mask_path": [""]})


def ensure_cache(table: pd.DataFrame, out_dir: Path, image_size: int, show_progress: bool = True) -> ProblemData:
    """Decode (and validate) every image and mask once into .npy files; later calls load those."""
    problem = int(table["problem"].iat[0])
    cache_dir = out_dir / "cache"
    images_npy, masks_npy, meta_json = (cache_dir / f"{n}_{image_size}.{ext}" for n, ext in (("images", "npy"), ("masks", "npy"), ("meta", "json")))
    meta = {"image_size": image_size, "ids_sha1": ids_hash(table)}
    if meta_json.is_file() and read_json(meta_json) == meta and images_npy.is_file() and masks_npy.is_file():
        # Loaded whole (not memory-mapped): epochs then read RAM, and arrays are writable for torch.
        return ProblemData(problem, table, np.load(images_npy), np.load(masks_npy))
    images, masks = _decode_all(table, image_size, show_progress)
    for path, array in ((images_npy, images), (masks_npy, masks)):
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
    write_json(meta_json, meta)
    return ProblemData(problem, table, images, masks)


def _decode_all(table: pd.DataFrame, size: int, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
    n_masks = int((table["mask_row"] >= 0).sum())
    images = np.empty((len(table), size, size), dtype=np.uint8)
    masks = np.zeros((n_masks, size, size), dtype=bool)
    rows = zip(table["image_path"], table["mask_path"], table["mask_row"])
    desc = f"decode problem {int(table['problem'].iat[0])}"
    for i, (image_path, mask_path, mask_row) in enumerate(tqdm(rows, total=len(table), desc=desc, disable=None if show_progress else True, leave=False)):
        image = read_gray(image_path)
        images[i] = resize_image(image, size)
        if mask_row >= 0:
            masks[mask_row] = resize_mask(read_mask(mask_path, image.shape, image_path), size)
    return images, masks


def _fingerprint(index: pd.DataFrame) -> str:
    """A hash of the file names and sizes of the dataset, so a swapped dataset is noticed."""
    digest = hashlib.sha1()
    for path in sorted(index["image_path"]):
        digest.update(f"{Path(path).name}:{Path(path).stat().st_size};".encode())
    digest.update(",".join(map(str, index["label"])).encode())
    return digest.hexdigest()


def ids_hash(table: pd.DataFrame) -> str:
    """SHA-1 of a table's image ids in order (what a cache built from its rows depends on)."""
    return hashlib.sha1("\n".join(table["image_id"]).encode()).hexdigest()


def _check_recorded(path: Path, recorded: dict[str, object], wanted: dict[str, object]) -> None:
    changed = [k for k in wanted if recorded.get(k) != wanted[k]]
    if changed:
        what = ", ".join(
            f"{k} was {recorded.get(k)!r}, now {wanted[k]!r}" if k != "fingerprint" else "the dataset's files differ"
            for k in changed
        )
        raise ConfigError(
            f"{path}: this problem was split with other settings ({what}); "
            "use another paths.output_dir (or experiment), or delete that folder"
        )
