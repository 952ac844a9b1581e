"""New images for prediction: a folder, a glob or one file of PNG, BMP or TIFF, read as 8-bit gray."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectcam.errors import ConfigError, DatasetError

SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


def collect_inputs(spec: str) -> list[Path]:
    """The image files a predict.input names, sorted: a file, every image file of a folder (not recursive), or a glob."""
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not found:
            raise DatasetError(f"{path}: no {'/'.join(s.lstrip('.').upper() for s in SUFFIXES)} image in this folder")
        return found
    if path.is_file():
        return [path]
    if any(ch in spec for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise DatasetError(f"{spec}: the pattern matches no file")
        return found
    raise DatasetError(f"{path}: no such file or folder")


def read_input(path: Path) -> tuple[np.ndarray, str | None]:
    """(H, W) uint8 gray of a new image and a note of the conversion made (None when it was 8-bit gray already)."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                gray, note = (np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8), f"{mode} (16-bit) -> 8-bit gray"
            elif mode == "L":
                gray, note = np.asarray(img, dtype=np.uint8), None
            else:
                gray, note = np.asarray(img.convert("L"), dtype=np.uint8), f"{mode} -> 8-bit gray (ITU-R 601 luma)"
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({' '.join(str(exc).split())})") from None
    if gray.ndim != 2:
        raise DatasetError(f"{path}: decodes to shape {gray.shape}, not one 2-D image")
    return gray, note


def check_min_size(path: Path, shape: tuple[int, int], minimum: int) -> None:
    """One line when an image is smaller than the network's minimum input on a side."""
    if min(shape) < minimum:
        raise DatasetError(f"{path}: image is {shape[1]}x{shape[0]}, smaller than the network's minimum of {minimum} px a side")


def check_on_error(value: object) -> str:
    """predict.on_error checked: skip (go on with the rest) or stop (exit 2 at the first bad file)."""
    if str(value) not in ("skip", "stop"):
        raise ConfigError(f"predict.on_error: {value!r} is not one of skip, stop")
    return str(value)
