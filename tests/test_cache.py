"""The per-problem cache: masks at native resolution (never resampled), images resized, memory-mapped, rebuilt when stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagm_tree import make_tree, write_png
from defectcam.data.dagm import index_dagm
from defectcam.data.prepare import ProblemData, SplitSettings, ensure_cache, ensure_split
from defectcam.errors import DatasetError
from defectcam.io import read_json, write_json

NATIVE = 64
SETTINGS = SplitSettings("official", 0, 0.25, 0.15)


def prepare(root: Path, out: Path, size: int) -> ProblemData:
    """Split and cache problem 1 of the tree at `root` into `out` with images at `size`."""
    table = ensure_split(index_dagm(root, [1]), out, SETTINGS)
    return ensure_cache(table, out, size, show_progress=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A DAGM tree of 64x64 images (a quarter of each split defective)."""
    return make_tree(tmp_path / "DAGM", size=NATIVE)


def test_one_pixel_mask_survives_at_native_size(tree: Path, tmp_path: Path) -> None:
    # (33, 17) is no block's top-left pixel at 4x reduction: nearest resampling to 16 px drops it.
    one_pixel = np.zeros((NATIVE, NATIVE), dtype=np.uint8)
    one_pixel[33, 17] = 255
    write_png(tree / "Class1" / "Train" / "Label" / "0021_label.PNG", one_pixel)
    data = prepare(tree, tmp_path / "out", 16)
    assert data.images.shape[1:] == (16, 16) and data.native_size == (NATIVE, NATIVE)
    assert data.masks.shape[1:] == (NATIVE, NATIVE) and data.masks.dtype == bool
    row = int(np.flatnonzero(data.table["image_id"] == "Class1/Train/0021")[0])
    assert np.array_equal(data.mask_of(row), one_pixel > 0)
    clean = int(np.flatnonzero(data.table["label"] == 0)[0])
    assert data.mask_of(clean).shape == (NATIVE, NATIVE) and not data.mask_of(clean).any()


def test_images_are_area_resized_masks_are_exact(tree: Path, tmp_path: Path) -> None:
    data = prepare(tree, tmp_path / "out", 32)
    for row in np.flatnonzero(data.table["label"] == 1):
        mask_path = data.table["mask_path"].iat[row]
        assert np.array_equal(data.mask_of(int(row)), np.asarray(Image.open(mask_path)) > 0)
    image = np.asarray(Image.open(data.table["image_path"].iat[0]), dtype=np.float64)
    area = image.reshape(32, 2, 32, 2).mean(axis=(1, 3))  # a 2x2 area average, what INTER_AREA gives at exactly 2x
    assert np.abs(data.images[0].astype(np.float64) - area).max() <= 0.5 + 1e-9


def test_caches_are_memory_maps_written_once(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(tree, out, 32)
    files = sorted((out / "cache").iterdir())
    stamps = [path.stat().st_mtime_ns for path in files]
    again = prepare(tree, out, 32)
    assert [path.stat().st_mtime_ns for path in files] == stamps  # loaded, not rewritten
    for data in (first, again):
        assert isinstance(data.images, np.memmap) and isinstance(data.masks, np.memmap)
        assert not data.images.flags.writeable  # read-only: consumers copy what they change
    assert np.array_equal(again.images, first.images) and np.array_equal(again.masks, first.masks)


def test_old_cache_with_resized_masks_is_rebuilt(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = prepare(tree, out, 16)
    # What the previous version left: masks resized to the image size, and a meta without a version.
    meta = out / "cache" / "meta_16.json"
    write_json(meta, {"image_size": 16, "ids_sha1": read_json(meta)["ids_sha1"]})
    np.save(out / "cache" / "masks_16.npy", np.zeros((len(data.masks), 16, 16), dtype=bool))
    rebuilt = prepare(tree, out, 16)
    assert rebuilt.masks.shape[1:] == (NATIVE, NATIVE) and rebuilt.masks.any(axis=(1, 2)).all()


def test_images_of_two_sizes_are_refused(tree: Path, tmp_path: Path) -> None:
    write_png(tree / "Class1" / "Test" / "0002.PNG", np.full((48, 48), 100))  # defect-free, the odd one
    with pytest.raises(DatasetError, match=r"0002\.PNG: image is 48x48 but 0021\.PNG.*is 64x64"):
        prepare(tree, tmp_path / "out", 32)
