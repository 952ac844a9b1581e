"""Write a PNG grid of synthetic DAGM samples: a row per problem, clean / deviating / defective."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from defectcam.data.synthetic import PROBLEMS, render_sample

_LABEL_HEIGHT = 14
_COLUMNS = ("defect-free", "deviation", "defective", "with label", "defective", "with label")


def outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The grey image as RGB with the mask's boundary drawn in red, uint8 (n, n, 3)."""
    inside = mask > 0
    interior = inside.copy()
    neighbours = inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    interior[1:-1, 1:-1] &= neighbours
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[inside & ~interior] = (255, 40, 40)
    return rgb


def problem_row(problem: int, size: int, seed: int, contrast: float) -> list[np.ndarray]:
    """Six RGB tiles of one problem, in the order of `_COLUMNS`."""
    def grey(a: np.ndarray) -> np.ndarray:
        return np.repeat(a[..., None], 3, axis=2)

    tiles = [grey(render_sample(problem, size, seed, 0, 1, False).image)]
    tiles.append(grey(render_sample(problem, size, seed, 0, 2, False, deviation=True).image))
    for number in (3, 4):
        sample = render_sample(problem, size, seed, 0, number, True, contrast=contrast)
        assert sample.mask is not None
        tiles += [grey(sample.image), outline(sample.image, sample.mask)]
    return tiles


def preview(problems: list[int], size: int, seed: int, contrast: float) -> Image.Image:
    """The full grid with column titles and problem numbers."""
    gap = 4
    width = len(_COLUMNS) * (size + gap) + 40
    height = _LABEL_HEIGHT + len(problems) * (size + gap)
    canvas = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(_COLUMNS):
        draw.text((40 + col * (size + gap), 1), title, fill=(230, 230, 230))
    for row, problem in enumerate(problems):
        top = _LABEL_HEIGHT + row * (size + gap)
        draw.text((4, top + size // 2 - 6), f"P{problem}", fill=(230, 230, 230))
        for col, tile in enumerate(problem_row(problem, size, seed, contrast)):
            canvas.paste(Image.fromarray(tile), (40 + col * (size + gap), top))
    return canvas


def main() -> None:
    """Parse arguments and write the preview PNG."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("/tmp/synthetic_preview.png"))
    parser.add_argument("--problems", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrast", type=float, default=1.0)
    args = parser.parse_args()
    unknown = sorted(set(args.problems) - set(PROBLEMS))
    if unknown:
        parser.error(f"unknown problems {unknown}; choose from {sorted(PROBLEMS)}")
    preview(args.problems, args.size, args.seed, args.contrast).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
