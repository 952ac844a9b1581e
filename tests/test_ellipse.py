"""Ellipse post-process: the moment ellipse of the largest component, recovered from noisy blobs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from defectcam.localization.ellipse import ellipse_masks, largest_component_ellipses

pytestmark = pytest.mark.usefixtures("one_thread")


def ellipse(size: int, cx: float, cy: float, a: float, b: float, angle: float) -> torch.Tensor:
    """Filled ellipse (semi-axes a, b, rotated by angle) at pixel centres of a size x size image."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    u, v = (xs - cx) * c + (ys - cy) * s, -(xs - cx) * s + (ys - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("size", [96, 512])
def test_ellipse_recovered_from_a_noisy_blob_with_a_satellite(size: int) -> None:
    scale = size / 96
    truth = torch.stack([ellipse(size, 40 * scale, 55 * scale, 22 * scale, 9 * scale, 0.6),
                         ellipse(size, 60 * scale, 30 * scale, 12 * scale, 12 * scale, 0.0)])
    g = torch.Generator().manual_seed(0)
    maps = 0.7 * truth.float() + 0.45 * torch.rand(truth.shape, generator=g)
    maps[0, : int(10 * scale), : int(10 * scale)] = 0.95  # a smaller bright satellite, away from the defect
    maps = F.avg_pool2d(maps.unsqueeze(1), 3, 1, 1).squeeze(1)  # ragged, not elliptical, edges
    raw = maps >= 0.55
    fitted = ellipse_masks(maps, 0.55)
    assert iou(fitted[0], truth[0]) > 0.95 and iou(fitted[1], truth[1]) > 0.95
    assert iou(fitted[0], truth[0]) > iou(raw[0], truth[0]) + 0.05  # the fit beats the map with its satellite
    assert not fitted[0, : int(10 * scale), : int(10 * scale)].any()  # the satellite is dropped


def test_empty_single_pixel_and_separate_images() -> None:
    binary = torch.zeros(3, 16, 16, dtype=torch.bool)
    binary[1, 7, 9] = True
    binary[2, 0, :] = True  # touches image 1's edge in the stack: must not join it
    fit = largest_component_ellipses(binary, (16, 16))
    assert fit.present.tolist() == [False, True, True]
    assert fit.centre[1].tolist() == [9.5, 7.5]
    assert torch.allclose(fit.covariance[1], torch.eye(2, dtype=torch.float64) / 12)  # one pixel: its own variance
    drawn = ellipse_masks(binary.float(), 0.5)
    assert not drawn[0].any() and drawn[1].sum() == 1 and drawn[1, 7, 9]
    assert drawn[2, 0].all() and not drawn[2, 3:].any()


def test_moments_follow_the_full_size_from_a_coarse_grid() -> None:
    """Found on a 128 grid, drawn at 512: the ellipse keeps its place and size in full-size pixels."""
    truth = ellipse(512, 300.0, 200.0, 90.0, 40.0, -0.4)
    maps = truth.float().unsqueeze(0)
    fitted = ellipse_masks(maps, 0.5)
    assert iou(fitted[0], truth) > 0.97


def test_counting_without_drawing_equals_counting_the_drawn_ellipses() -> None:
    from defectcam.localization.ellipse import Ellipses, draw_ellipses, ellipse_counts, pixels_inside

    g = torch.Generator().manual_seed(3)
    n = 64
    centre = torch.rand(n, 2, generator=g, dtype=torch.float64) * 80 - 8  # some centres outside the image
    axes = torch.rand(n, 2, generator=g, dtype=torch.float64) * 30 + 0.3
    angle = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    covariance = rot @ torch.diag_embed(axes.square() / 4) @ rot.transpose(1, 2) + torch.eye(2, dtype=torch.float64) / 12
    present = torch.rand(n, generator=g) > 0.1
    fitted = Ellipses(centre, covariance, present)
    assert torch.equal(pixels_inside(fitted, (64, 72)), draw_ellipses(fitted, (64, 72)).sum((1, 2)))
    # and the post-process's counts equal those of the drawn masks
    maps = F.avg_pool2d(torch.rand(6, 1, 48, 48, generator=g), 5, 1, 2).squeeze(1)
    masks = torch.rand(6, 48, 48, generator=g) > 0.8
    thresholds = torch.tensor([0.3, 0.5, 0.55])
    tp, fp, fn = ellipse_counts(maps, masks, thresholds)
    for k, t in enumerate(thresholds.tolist()):
        drawn = ellipse_masks(maps, t)
        assert torch.equal(tp[k], (drawn & masks).sum((1, 2))) and torch.equal(fp[k], (drawn & ~masks).sum((1, 2)))
        assert torch.equal(fn[k], (~drawn & masks).sum((1, 2)))


def _direct_moments(binary: torch.Tensor, full_size: tuple[int, int]) -> list[tuple[float, ...] | None]:
    """Per image, the largest 8-connected component (ties: first in raster order) and its moments, pixel by pixel."""
    import numpy as np
    from scipy import ndimage

    height, width = binary.shape[1:]
    step_y, step_x = full_size[0] / height, full_size[1] / width
    out: list[tuple[float, ...] | None] = []
    for image in binary.numpy():
        labels, count = ndimage.label(image, structure=np.ones((3, 3)))
        if count == 0:
            out.append(None)
            continue
        sizes = np.bincount(labels.ravel())[1:]
        ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)  # argmax: the first of equal sizes
        x, y = (xs + 0.5) * step_x, (ys + 0.5) * step_y
        out.append((x.mean(), y.mean(), x.var() + step_x**2 / 12, y.var() + step_y**2 / 12, ((x - x.mean()) * (y - y.mean())).mean()))
    return out


@pytest.mark.parametrize(("grid", "full"), [((40, 40), (40, 40)), ((32, 48), (128, 200)), ((37, 23), (512, 512))])
def test_moments_equal_a_direct_computation(grid: tuple[int, int], full: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(1)
    maps = F.avg_pool2d(torch.rand(12, 1, *grid, generator=g), 3, 1, 1).squeeze(1)
    binary = maps >= torch.linspace(0.4, 0.7, 12)[:, None, None]
    binary[0] = False  # no component
    binary[1] = False
    binary[1, 2:4, 2:4] = binary[1, 10:12, 10:12] = True  # two equal components: the first in raster order wins
    fitted = largest_component_ellipses(binary, full)
    for i, expected in enumerate(_direct_moments(binary, full)):
        assert bool(fitted.present[i]) == (expected is not None)
        if expected is None:
            continue
        mean_x, mean_y, var_x, var_y, cov = expected
        got = fitted.covariance[i]
        assert torch.allclose(fitted.centre[i], torch.tensor([mean_x, mean_y], dtype=torch.float64), rtol=1e-9)
        assert torch.allclose(got, torch.tensor([[var_x, cov], [cov, var_y]], dtype=torch.float64), rtol=1e-9, atol=1e-9)
    assert torch.allclose(fitted.centre[1], torch.tensor([3.0, 3.0], dtype=torch.float64) * torch.tensor(
        [full[1] / grid[1], full[0] / grid[0]], dtype=torch.float64))
