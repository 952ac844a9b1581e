"""Baseline scoring maps, scored by the same code as CAMs: float32 (n, H, W) maps in [0, 1].

A CAM method that does not beat the best of these by a clear margin is not localizing.
Every baseline takes ``(n, size, seed=0, device=None)`` so they can be called by name through
``BASELINES``; ``seed`` only matters for ``random``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Size = int | tuple[int, int]
BaselineFn = Callable[..., Tensor]


def _hw(n: int, size: Size) -> tuple[int, int]:
    """(H, W) from an int or a pair; ValueError on negative n or non-positive sizes."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if n < 0 or h <= 0 or w <= 0:
        raise ValueError(f"need n >= 0 and a positive size, got n={n}, size={size}")
    return int(h), int(w)


def full_image_maps(n: int, size: Size, seed: int = 0, device: torch.device | str | None = None) -> Tensor:
    """n, size -> float32 (n, H, W) of ones: every threshold in (0, 1] predicts the whole image."""
    h, w = _hw(n, size)
    return torch.ones((n, h, w), dtype=torch.float32, device=device)


def centred_ellipse_maps(
    n: int, size: Size, seed: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """n, size -> float32 (n, H, W) map ``1 - r / sqrt(2)`` of the elliptical distance r from the centre.

    r = sqrt(((x + 0.5 - W/2) / (W/2))^2 + ((y + 0.5 - H/2) / (H/2))^2) at pixel centres, so
    r = 1 on the ellipse inscribed in the image and r < sqrt(2) everywhere: the map lies in
    (0, 1], and threshold t predicts the centred ellipse r <= sqrt(2) (1 - t) (t = 1 - 1/sqrt(2)
    ~ 0.29 gives the inscribed ellipse; lower thresholds grow it out to the corners).
    """
    h, w = _hw(n, size)
    y = (torch.arange(h, dtype=torch.float64) + 0.5 - h / 2) / (h / 2)
    x = (torch.arange(w, dtype=torch.float64) + 0.5 - w / 2) / (w / 2)
    r = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    one = (1 - r / math.sqrt(2)).clamp(0, 1).to(torch.float32)
    return one.to(device).expand(n, h, w).clone()


def random_maps(n: int, size: Size, seed: int = 0, device: torch.device | str | None = None) -> Tensor:
    """n, size, seed -> float32 (n, H, W) uniform [0, 1) noise, reproducible for a seed on any device."""
    h, w = _hw(n, size)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, h, w), generator=generator, dtype=torch.float32).to(device)


BASELINES: dict[str, BaselineFn] = {
    "full_image": full_image_maps,
    "centred_ellipse": centred_ellipse_maps,
    "random": random_maps,
}
