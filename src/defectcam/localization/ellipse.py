"""Ellipse post-process: replace each thresholded map by the ellipse with the second moments of its
largest connected component.

DAGM labels every defect with a filled ellipse around it, so a prediction shaped like one can
only gain IoU where the thresholded CAM is a blob with ragged edges or small satellites. For a
uniformly filled ellipse with semi-axes a, b the covariance of its points has eigenvalues
a^2/4 and b^2/4, so the ellipse with a region's mean mu and covariance S is
``{p : (p - mu)^T S^-1 (p - mu) <= 4}``. A pixel is a unit square, not a point: its own variance
1/12 per axis is added to S, which also keeps one-pixel and one-line components non-degenerate.

Components are found on a coarse grid (at most ``ANALYSIS_SIZE`` pixels a side, by area
averaging of the map) by one SciPy ``ndimage.label`` call over the whole stack (in-plane
8-connectivity, never across images), and the moments of every component come from one pass
of weighted counts; the ellipse is then drawn at the full size. CAM maps are smooth
upsamplings of maps of 8x8 to 128x128 cells, so the coarse grid loses no component that matters
and keeps the cost independent of the mask resolution (512 on DAGM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

ANALYSIS_SIZE = 128
# In-plane 8-connectivity; the zero planes above and below keep images of the stack apart.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


@dataclass(frozen=True)
class Ellipses:
    """One moment ellipse per image, in full-size pixel units (x = column, y = row, pixel centres at +0.5)."""

    centre: Tensor  # (N, 2) float64 (x, y)
    covariance: Tensor  # (N, 2, 2) float64, pixel variance included
    present: Tensor  # (N,) bool: the image had a component (else nothing is drawn)


def analysis_maps(maps: Tensor, size: int = ANALYSIS_SIZE) -> Tensor:
    """(N, H, W) -> (N, h, w) with h, w <= size: area averages (no-op when already small enough)."""
    n, height, width = maps.shape
    if height <= size and width <= size:
        return maps.float()
    target = (min(height, size), min(width, size))
    return F.adaptive_avg_pool2d(maps.float().unsqueeze(1), target).squeeze(1)


def largest_component_ellipses(binary: Tensor, full_size: tuple[int, int]) -> Ellipses:
    """(N, h, w) bool on a grid that tiles a full_size (H, W) image -> the moment ellipse of each
    image's largest 8-connected component (ties: the component found first in raster order)."""
    n, height, width = binary.shape
    labels, count = ndimage.label(binary.cpu().numpy(), structure=_STRUCTURE)
    step_y, step_x = full_size[0] / height, full_size[1] / width
    centre = np.zeros((n, 2))
    covariance = np.tile(np.diag([step_x**2 / 12, step_y**2 / 12]), (n, 1, 1))  # a pixel's own variance
    present = np.zeros(n, dtype=bool)
    if count:
        size = np.bincount(labels.ravel(), minlength=count + 1)
        # Components never span images and scipy numbers them in raster order: image i owns a contiguous
        # range of labels, ending at its largest label.
        last = np.maximum.accumulate(labels.reshape(n, -1).max(1))
        image_of = np.searchsorted(last, np.arange(1, count + 1), side="left")
        order = np.lexsort((np.arange(count), -size[1:], image_of))  # per image: largest, then lowest label
        images, first = np.unique(image_of[order], return_index=True)
        chosen = np.zeros(count + 1, dtype=bool)
        chosen[order[first] + 1] = True
        # Moments of each image's chosen component from its row and column sums (a few passes over the
        # grid, not one weighted pass per moment over a list of pixels).
        component = chosen[labels][images]  # (k, h, w) bool
        ys = (np.arange(height) + 0.5) * step_y  # pixel centres in full-size units
        xs = (np.arange(width) + 0.5) * step_x
        columns = component.sum(1, dtype=np.float64)  # (k, w)
        rows = component.sum(2, dtype=np.float64)  # (k, h)
        area = rows.sum(1)
        mean_x, mean_y = columns @ xs / area, rows @ ys / area
        var_x, var_y = columns @ (xs * xs) / area - mean_x**2, rows @ (ys * ys) / area - mean_y**2
        cov_xy = np.einsum("khw,h,w->k", component, ys, xs, dtype=np.float64) / area - mean_x * mean_y
        centre[images] = np.stack([mean_x, mean_y], -1)
        covariance[images] += np.stack([np.stack([var_x, cov_xy], -1), np.stack([cov_xy, var_y], -1)], -2)
        present[images] = True
    return Ellipses(torch.from_numpy(centre), torch.from_numpy(covariance), torch.from_numpy(present))


def _quadratic(ellipses: Ellipses) -> tuple[Tensor, Tensor, Tensor]:
    """(a, b, c), each float64 (N,): S^-1 = [[a, b], [b, c]], in closed form (linalg.inv costs ~10 ms a call here)."""
    s = ellipses.covariance  # includes the pixel variance 1/12: always invertible
    det = s[:, 0, 0] * s[:, 1, 1] - s[:, 0, 1] * s[:, 1, 0]
    return s[:, 1, 1] / det, -s[:, 0, 1] / det, s[:, 0, 0] / det


def _inside(ellipses: Ellipses, image: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Whether pixel centres (x + 0.5, y + 0.5) of the given images lie in their ellipses: q(p) <= 4, float64."""
    a, b, c = (v[image] for v in _quadratic(ellipses))
    dx = x.double() + 0.5 - ellipses.centre[image, 0]
    dy = y.double() + 0.5 - ellipses.centre[image, 1]
    return (a * dx * dx + 2 * b * dx * dy + c * dy * dy <= 4.0) & ellipses.present[image]


def draw_ellipses(ellipses: Ellipses, size: tuple[int, int]) -> Tensor:
    """Ellipses -> (N, H, W) bool: pixel centres p with (p - mu)^T S^-1 (p - mu) <= 4 (empty where absent)."""
    n, (height, width) = ellipses.present.numel(), size
    image, y, x = torch.meshgrid(torch.arange(n), torch.arange(height), torch.arange(width), indexing="ij")
    return _inside(ellipses, image, y, x)


def pixels_inside(ellipses: Ellipses, size: tuple[int, int]) -> Tensor:
    """Ellipses -> (N,) int64 count of the image's pixel centres inside each ellipse, without drawing it.

    Per row the inside pixels form one run, whose ends follow from the quadratic's roots; the two
    ends are then re-tested with the same inequality as ``_inside``, so the count equals
    ``draw_ellipses(...).sum((1, 2))`` exactly, at O(N * H) instead of O(N * H * W).
    """
    n, (height, width) = ellipses.present.numel(), size
    a, b, c = (v[:, None] for v in _quadratic(ellipses))
    image = torch.arange(n)[:, None].expand(n, height)
    rows = torch.arange(height)[None, :].expand(n, height)
    dy = rows.double() + 0.5 - ellipses.centre[:, 1, None]
    # a dx^2 + 2 b dy dx + (c dy^2 - 4) <= 0  ->  dx in [(-b dy - r) / a, (-b dy + r) / a]
    root = (b * b * dy * dy - a * (c * dy * dy - 4.0)).clamp(min=0).sqrt()
    cx = ellipses.centre[:, 0, None]
    first = torch.ceil(cx + (-b * dy - root) / a - 0.5).clamp(0, width - 1).long()
    last = torch.floor(cx + (-b * dy + root) / a - 0.5).clamp(0, width - 1).long()
    # Rounding can move an end by one pixel: settle both ends with the exact test.
    for _ in range(2):
        first = torch.where(_inside(ellipses, image, rows, first), first, first + 1)
        before = (first - 1).clamp(min=0)
        first = torch.where((first > 0) & _inside(ellipses, image, rows, before), before, first)
        last = torch.where(_inside(ellipses, image, rows, last), last, last - 1)
        after = (last + 1).clamp(max=width - 1)
        last = torch.where((last < width - 1) & _inside(ellipses, image, rows, after), after, last)
    runs = (last - first + 1).clamp(min=0)
    # A row the ellipse does not reach has no inside end pixel.
    runs = torch.where(_inside(ellipses, image, rows, first.clamp(0, width - 1)), runs, torch.zeros_like(runs))
    return runs.sum(1) * ellipses.present


def ellipse_masks(maps: Tensor, threshold: float, analysis_size: int = ANALYSIS_SIZE) -> Tensor:
    """maps (N, H, W), threshold -> (N, H, W) bool: the moment ellipse of the largest component of
    ``analysis_maps(maps) >= threshold``, drawn at (H, W); an image with nothing above it stays empty."""
    coarse = analysis_maps(maps, analysis_size) >= threshold
    size = (int(maps.shape[1]), int(maps.shape[2]))
    return draw_ellipses(largest_component_ellipses(coarse, size), size).to(maps.device)


def ellipse_counts(maps: Tensor, masks: Tensor, thresholds: Tensor, analysis_size: int = ANALYSIS_SIZE) -> tuple[Tensor, Tensor, Tensor]:
    """maps (N, H, W), masks (N, H, W) bool, thresholds (T,) -> tp, fp, fn, each int64 (T, N), of the
    ellipse post-process at each threshold; equal to counting ``ellipse_masks`` but without drawing.

    The coarse maps and the mask pixels are taken once; per threshold only the components are
    labelled, the mask pixels tested and the ellipses' areas counted row by row.
    """
    size = (int(maps.shape[1]), int(maps.shape[2]))
    coarse = analysis_maps(maps, analysis_size).cpu()
    image, y, x = torch.nonzero(masks.cpu(), as_tuple=True)
    area = torch.bincount(image, minlength=maps.shape[0])
    rows = []
    for threshold in torch.as_tensor(thresholds, dtype=torch.float64).tolist():
        fitted = largest_component_ellipses(coarse >= threshold, size)
        tp = torch.bincount(image[_inside(fitted, image, y, x)], minlength=maps.shape[0])
        rows.append((tp, pixels_inside(fitted, size) - tp, area - tp))
    device = maps.device
    return tuple(torch.stack(column).to(device) for column in zip(*rows))  # type: ignore[return-value]
