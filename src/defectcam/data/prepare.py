"""Per-problem data preparation, done once and reused: the split (split.csv) and the decoded uint8 cache."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from defectcam.data.images import read_gray, read_mask, resize_image
from defectcam.data.splits import make_split
from defectcam.errors import ConfigError, DatasetError
from defectcam.io import atomic_path, read_json, write_json

# Recorded in the cache's meta: an older cache is rebuilt, never misread. 2: masks at native size (1 resized them).
CACHE_VERSION = 2


@dataclass(frozen=True)
class SplitSettings:
    """What decides a split; recorded beside split.csv so a changed setting is detected."""

    kind: str
    seed: int
    val_fraction: float
    test_fraction: float


@dataclass(frozen=True)
class ProblemData:
    """One problem's split table (row order = cache order), its images at the network's size, its masks at native size.

    `images` and `masks` are read-only memory maps of the cache files, so memory follows what is read.
    """

    problem: int
    table: pd.DataFrame  # image_id, problem, source_split, part, label, image_path, mask_path, mask_row
    images: np.ndarray  # (N, S, S) uint8, area-resized to data.image_size
    masks: np.ndarray  # (M, H, W) bool at the dataset's native size, never resampled; one per defective row (table.mask_row)

    @cached_property
    def mask_rows(self) -> np.ndarray:
        """table.mask_row as an array (looked up once per image per epoch)."""
        return self.table["mask_row"].to_numpy()

    @property
    def native_size(self) -> tuple[int, int]:
        """(H, W) of the dataset's own images and masks (512x512 on DAGM), the size masks are kept and scored at."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def mask_of(self, row: int) -> np.ndarray:
        """The (H, W) native-size bool mask of a table row (all False for a defect-free image)."""
        mask_row = int(self.mask_rows[row])
        if mask_row < 0:
            return np.zeros(self.native_size, dtype=bool)
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
    is_defective = table["label"] == 1  # the Labels.txt flag decides; the mask must then mark pixels
    table["mask_row"] = np.where(is_defective, is_defective.cumsum() - 1, -1)
    with atomic_path(split_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_json(split_json, recorded)
    return pd.read_csv(split_csv, keep_default_na=False, na_values={"mask_path": [""]})


def ensure_cache(table: pd.DataFrame, out_dir: Path, image_size: int, show_progress: bool = True) -> ProblemData:
    """Decode (and validate) every image and mask once into .npy files; later calls memory-map those.

    In: a problem's table from ensure_split, its folder, S = data.image_size. Out: ProblemData over
    cache/images_<S>.npy ((N, S, S) uint8, area-resized) and cache/masks_<S>.npy ((M, H, W) bool, native size).
    """
    problem = int(table["problem"].iat[0])
    cache_dir = out_dir / "cache"
    images_npy, masks_npy, meta_json = (cache_dir / f"{n}_{image_size}.{ext}" for n, ext in (("images", "npy"), ("masks", "npy"), ("meta", "json")))
    meta = {"version": CACHE_VERSION, "image_size": image_size, "ids_sha1": ids_hash(table)}
    fresh = meta_json.is_file() and read_json(meta_json) == meta and images_npy.is_file() and masks_npy.is_file()
    if not fresh:
        _decode_into(table, images_npy, masks_npy, image_size, show_progress)
        write_json(meta_json, meta)  # last: it vouches for the two arrays
    # Memory-mapped, read-only: a process holds in RAM only the pages of the problem it reads.
    return ProblemData(problem, table, np.load(images_npy, mmap_mode="r"), np.load(masks_npy, mmap_mode="r"))


def _decode_into(table: pd.DataFrame, images_npy: Path, masks_npy: Path, size: int, show_progress: bool) -> None:
    """Decode every row into the two .npy files, written atomically; raise DatasetError naming a bad file."""
    native = read_gray(table["image_path"].iat[0]).shape
    n_masks = int((table["mask_row"] >= 0).sum())
    with atomic_path(images_npy) as images_tmp, atomic_path(masks_npy) as masks_tmp:
        # Decoded straight into memory maps of the temp files: no full copy of the problem in RAM.
        images = np.lib.format.open_memmap(images_tmp, mode="w+", dtype=np.uint8, shape=(len(table), size, size))
        masks = np.lib.format.open_memmap(masks_tmp, mode="w+", dtype=bool, shape=(n_masks, *native))
        _decode_rows(table, images, masks, show_progress)
        images.flush()
        masks.flush()
        del images, masks  # unmapped before the temp files are renamed into place


def _decode_rows(table: pd.DataFrame, images: np.ndarray, masks: np.ndarray, show_progress: bool) -> None:
    """Fill images (N, S, S) with area-resized images and masks (M, H, W) with native masks, row by row."""
    native, size = masks.shape[1:], images.shape[1]
    first = Path(table["image_path"].iat[0]).name
    rows = zip(table["image_path"], table["mask_path"], table["mask_row"])
    desc = f"decode problem {int(table['problem'].iat[0])}"
    for i, (image_path, mask_path, mask_row) in enumerate(tqdm(rows, total=len(table), desc=desc, disable=None if show_progress else True, leave=False)):
        image = read_gray(image_path)
        if image.shape != native:
            raise DatasetError(
                f"{image_path}: image is {image.shape[1]}x{image.shape[0]} but {first}, the problem's first image, "
                f"is {native[1]}x{native[0]}; a problem's images and masks must share one size"
            )
        images[i] = resize_image(image, size)
        if mask_row >= 0:
            masks[mask_row] = read_mask(mask_path, native, image_path)


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
