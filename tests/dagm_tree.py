"""Build tiny DAGM-layout trees by hand for tests (independent of the synthetic generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEADER = "Class{problem}\n"


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def ellipse_mask(size: int, cy: int, cx: int, ry: int, rx: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.uint8) * 255


def make_split(
    split_dir: Path,
    problem: int,
    first_index: int,
    n_images: int,
    defective: set[int],
    size: int = 32,
    seed: int = 0,
    line_end: str = "\n",
    bom: bool = False,
    ext: str = ".PNG",
) -> None:
    """Images first_index.. with masks for the offsets in `defective`, and a Labels.txt."""
    rng = np.random.default_rng([seed, problem, first_index])
    rows = [HEADER.format(problem=problem).rstrip("\n")]
    for offset in range(n_images):
        number = first_index + offset
        image = rng.integers(80, 120, (size, size))
        name = f"{number:04d}{ext}"
        if offset in defective:
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            mask = ellipse_mask(size, cy, cx, size // 6, size // 5)
            image[mask > 0] += 100
            write_png(split_dir / "Label" / f"{number:04d}_label{ext}", mask)
            rows.append(f"{offset + 1}\t1\t{name}\t0\t{number:04d}_label{ext}")
        else:
            rows.append(f"{offset + 1}\t0\t{name}\t0\t0")
        write_png(split_dir / name, image)
    text = line_end.join(rows) + line_end
    (split_dir / "Label").mkdir(parents=True, exist_ok=True)
    (split_dir / "Label" / "Labels.txt").write_bytes(("\ufeff" if bom else "").encode() + text.encode())


def make_tree(root: Path, problems: tuple[int, ...] = (1,), n_train: int = 20, n_test: int = 20, size: int = 32) -> Path:
    """A valid DAGM tree: each split with a quarter of its images defective."""
    for problem in problems:
        for split, first, n in (("Test", 1, n_test), ("Train", n_test + 1, n_train)):
            defective = set(range(0, n, 4))
            make_split(root / f"Class{problem}" / split, problem, first, n, defective, size=size)
    return root
