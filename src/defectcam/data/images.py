"""Decode DAGM PNGs to uint8 arrays with clear errors; resize images (area). Masks are never resized."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from defectcam.errors import DatasetError


def read_gray(path: str | Path) -> np.ndarray:
    """Decode a PNG to a (H, W) uint8 array; colour or 16-bit files are converted to 8-bit gray."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "I;16" or img.mode == "I":
                return (np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8)
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from None


def read_mask(path: str | Path, expected_shape: tuple[int, int], image_path: str | Path) -> np.ndarray:
    """Decode a defective image's mask to a (H, W) bool array (any value > 0 is defect).

    Its size must equal its image's (expected_shape, (H, W)) and it must mark at least one pixel.
    """
    mask = read_gray(path)
    if mask.shape != expected_shape:
        raise DatasetError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {Path(image_path).name} "
            f"is {expected_shape[1]}x{expected_shape[0]}"
        )
    defect = mask > 0
    if not defect.any():
        # Labels.txt flags the image defective: an empty mask would score it as a defect with no pixels.
        raise DatasetError(f"{path}: mask of defective image {Path(image_path).name} has no defect pixel (all 0)")
    return defect


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square-resize a uint8 image with area interpolation (no-op at the same size)."""
    if image.shape == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
