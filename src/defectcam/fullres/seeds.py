"""Training targets of the full-resolution decoder, from a starting CAM and the image label alone.

Defective image: a few foreground seeds in the CAM's high region (above the image's Otsu threshold,
eroded so seeds keep off the region's uncertain rim) and background seeds in its low region (at or
below the image's `background_quantile`), each dilated to a small patch *inside its own region*.
Seeds are drawn afresh at every step. Defect-free image: every pixel is background (negative
evidence, as in NEGEV, Belharbi et al., MIDL 2022); DAGM is 7 parts in 8 defect-free.

Targets are (N, H, W) int64: 1 foreground, 0 background, IGNORE (-1) unlabelled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1
OTSU_BINS = 256


def otsu_thresholds(maps: Tensor, bins: int = OTSU_BINS) -> Tensor:
    """(N, H, W) maps -> (N,) Otsu threshold per image; foreground is ``map > threshold``.

    The histogram spans each image's own [min, max] in `bins` bins and the threshold is the centre of
    the bin that maximizes the between-class variance (scikit-image's `threshold_otsu`). A flat image
    gets its own value (nothing is foreground).
    """
    flat = maps.detach().flatten(1).double()
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = high - low
    flat_image = span[:, 0] <= 0
    width = torch.where(span > 0, span / bins, torch.ones_like(span))
    index = ((flat - low) / width).floor().clamp_(0, bins - 1).long()
    hist = torch.zeros(flat.shape[0], bins, dtype=torch.float64, device=flat.device).scatter_add_(1, index, torch.ones_like(flat))
    centres = low + width * (torch.arange(bins, device=flat.device, dtype=torch.float64) + 0.5)
    weight1 = hist.cumsum(1)
    weight2 = hist.flip(1).cumsum(1).flip(1)
    mean1 = (hist * centres).cumsum(1) / weight1.clamp_min(1e-300)
    mean2 = (hist * centres).flip(1).cumsum(1).flip(1) / weight2.clamp_min(1e-300)
    between = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    best = between.argmax(1, keepdim=True)
    threshold = centres.gather(1, best)[:, 0]
    return torch.where(flat_image, high[:, 0], threshold).to(maps.dtype)


def erode(region: Tensor, radius: int) -> Tensor:
    """(N, H, W) bool -> bool, eroded by a (2r+1) square; outside the image counts as inside (no rim erosion)."""
    if radius <= 0:
        return region
    inverted = (~region).float().unsqueeze(1)
    return ~(F.max_pool2d(inverted, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0)


def dilate(points: Tensor, patch: int) -> Tensor:
    """(N, H, W) bool -> bool, each True pixel grown to a patch x patch square (odd sizes centred)."""
    if patch <= 1:
        return points
    grown = F.max_pool2d(points.float().unsqueeze(1), patch, stride=1, padding=patch // 2)[:, 0]
    return grown[:, : points.shape[1], : points.shape[2]] > 0


def seed_regions(cams: Tensor, erode_radius: int = 2, background_quantile: float = 0.3) -> tuple[Tensor, Tensor]:
    """Starting CAMs (N, H, W) -> (foreground, background) regions, (N, H, W) bool each, disjoint.

    Foreground: ``cam > Otsu threshold``, eroded by `erode_radius`; where erosion leaves nothing, the
    uneroded region (a small defect must still get seeds). Background: ``cam <=`` the image's
    `background_quantile` of its values, outside the (uneroded) foreground.
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must be (N, H, W), got {tuple(cams.shape)}")
    if not 0.0 < background_quantile < 1.0:
        raise ValueError(f"background_quantile must be in (0, 1), got {background_quantile}")
    high = cams > otsu_thresholds(cams)[:, None, None]
    eroded = erode(high, erode_radius)
    emptied = ~eroded.flatten(1).any(1)
    foreground = torch.where(emptied[:, None, None], high, eroded)
    flat = cams.flatten(1)
    k = max(1, math.ceil(background_quantile * flat.shape[1]))
    cut = flat.kthvalue(k, dim=1).values
    background = (cams <= cut[:, None, None]) & ~high
    return foreground, background


def sample_seeds(region: Tensor, count: int, patch: int, generator: torch.Generator | None = None) -> Tensor:
    """(N, H, W) bool region -> (N, H, W) bool: `count` pixels drawn uniformly (with replacement) from each
    image's region, each grown to a patch and cut back to the region. An empty region gives no seed."""
    n = region.shape[0]
    flat = region.flatten(1).float()
    has_any = flat.sum(1) > 0
    seeds = torch.zeros_like(flat, dtype=torch.bool)
    if count > 0 and bool(has_any.any()):
        weights = flat[has_any]
        drawn = torch.multinomial(weights.cpu(), count, replacement=True, generator=generator).to(region.device)
        picked = torch.zeros_like(weights, dtype=torch.bool).scatter_(1, drawn, True)
        seeds[has_any] = picked
    return dilate(seeds.view(n, *region.shape[1:]), patch) & region


def training_targets(defective: Tensor, foreground: Tensor, background: Tensor, n_foreground: int, n_background: int,
                     patch: int, generator: torch.Generator | None = None, negatives: bool = True) -> Tensor:
    """Per image (N,) label and (N, H, W) seed regions -> (N, H, W) int64 target.

    Defective images: 1 on foreground seeds, 0 on background seeds, IGNORE elsewhere. Defect-free images:
    0 everywhere with `negatives`, else IGNORE everywhere (no evidence from them)."""
    target = torch.full(foreground.shape, IGNORE, dtype=torch.long, device=foreground.device)
    defective = defective.to(torch.bool).to(foreground.device)
    if bool(defective.any()):
        fg = sample_seeds(foreground[defective], n_foreground, patch, generator)
        bg = sample_seeds(background[defective], n_background, patch, generator)
        own = target[defective]
        own[bg] = 0
        own[fg] = 1
        target[defective] = own
    if negatives:
        target[~defective] = 0
    return target
