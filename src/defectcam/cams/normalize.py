"""Raw CAM -> scoring map: bilinear upsampling to the mask size, then per-image min-max to [0, 1].

Raw maps are cached at the layer's own resolution (small, possibly float16); scoring always
happens in float32 at the mask size.
"""

from collections.abc import Sequence
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor

from defectcam.errors import ConfigError

# Relative to each map's own scale (its largest magnitude), so maps of 1e-8 and of 1e3 normalize alike.
# A map whose range is below NORM_EPS of its scale is flat up to float32 rounding (a constant map after
# bilinear resizing varies in its last bits): it normalizes to zero, like an all-zero map.
NORM_EPS = 1e-6


def check_size(size: Sequence[int]) -> tuple[int, int]:
    """(H, W) of two positive integers (int, numpy or OmegaConf values) -> tuple; ConfigError otherwise."""
    message = f"output size must be two positive ints (H, W), got {size!r}"
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        raise ConfigError(message)
    if any(isinstance(s, bool) or not isinstance(s, Integral) or s <= 0 for s in size):
        raise ConfigError(message)
    return int(size[0]), int(size[1])


def check_maps(maps: Tensor, name: str = "maps") -> None:
    """Raise ValueError unless maps is a non-empty floating (N, h, w) tensor."""
    if not isinstance(maps, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, h, w), got {type(maps).__name__}")
    if maps.ndim != 3 or maps.numel() == 0:
        raise ValueError(f"{name} must have shape (N, h, w) with N, h, w > 0, got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {maps.dtype}")


def resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) -> float32 (N, H, W), bilinear with align_corners=False."""
    maps = maps.float()
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def minmax(maps: Tensor, eps: float = NORM_EPS) -> Tensor:
    """(N, H, W) -> (N, H, W) in [0, 1] per image: (m - min) / (max - min); flat maps -> 0.

    A map is flat when max - min <= eps * max(|min|, |max|): the test is relative, so the result does
    not depend on the magnitude of the map (raw CAMs range from ~1e-8 to ~1e3 across layers and models).
    """
    flat = maps.flatten(1)
    low = flat.amin(dim=1)[:, None, None]
    high = flat.amax(dim=1)[:, None, None]
    span = high - low
    is_flat = span <= eps * torch.maximum(low.abs(), high.abs())
    return ((maps - low) / torch.where(is_flat, torch.ones_like(span), span)).masked_fill(is_flat, 0.0)


def scoring_maps(raw: Tensor, size: Sequence[int], eps: float = NORM_EPS) -> Tensor:
    """Raw maps (N, h, w), any float dtype -> float32 (N, H, W) in [0, 1]: upsample, then min-max."""
    check_maps(raw, "raw maps")
    return minmax(resize(raw, check_size(size)), eps)
