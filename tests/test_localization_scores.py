"""Pixel AUROC / PxAP against scikit-learn, and the baseline maps."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from defectcam.localization import (
    BASELINES,
    centred_ellipse_maps,
    full_image_maps,
    iou_curve,
    pixel_auroc,
    pixel_average_precision,
    pixel_scores,
    random_maps,
)


def scored_case(seed, levels=None, dtype=torch.float32, n=4, h=15, w=17):
    """Maps that weakly separate defect pixels; quantized to `levels` values for heavy ties."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, h, w, generator=g) < 0.15
    maps = torch.rand(n, h, w, generator=g, dtype=torch.float64)
    maps = torch.where(masks, 0.4 + 0.6 * maps, maps)
    if levels:
        maps = torch.round(maps * levels) / levels
    return maps.to(dtype), masks


@pytest.mark.parametrize("levels", [None, 3, 10, 255])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_pixel_scores_match_sklearn(levels, dtype):
    for seed in range(3):
        maps, masks = scored_case(seed, levels, dtype)
        y = masks.numpy().ravel()
        s = (maps if dtype == torch.float64 else maps.float()).numpy().ravel()
        auroc, ap = roc_auc_score(y, s), average_precision_score(y, s)
        assert pixel_auroc(maps, masks) == pytest.approx(auroc, rel=1e-12, abs=1e-12)
        assert pixel_average_precision(maps, masks) == pytest.approx(ap, rel=1e-12, abs=1e-12)
        both = pixel_scores(maps, masks)
        assert both.auroc == pixel_auroc(maps, masks)
        assert both.average_precision == pixel_average_precision(maps, masks)


def test_pixel_scores_extremes():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2] = True
    assert pixel_auroc(masks.float(), masks) == 1.0
    assert pixel_average_precision(masks.float(), masks) == 1.0
    assert pixel_auroc(1 - masks.float(), masks) == 0.0
    const = torch.full((2, 4, 4), 0.3)
    assert pixel_auroc(const, masks) == 0.5  # one distinct score: the diagonal
    assert pixel_average_precision(const, masks) == pytest.approx(0.5)  # positive rate


def test_pixel_scores_need_both_classes_and_no_nan():
    maps = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="no positive"):
        pixel_auroc(maps, torch.zeros(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no negative"):
        pixel_average_precision(maps, torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc(torch.full((2, 4, 4), math.nan), maps > 0.5)
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(maps, torch.zeros(2, 4, 3, dtype=torch.bool))


@pytest.mark.parametrize("name", ["full_image", "centred_ellipse", "random"])
@pytest.mark.parametrize("size", [32, (24, 40)])
def test_baselines_shapes_and_ranges(name, size):
    maps = BASELINES[name](3, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert maps.shape == (3, h, w) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert BASELINES[name](0, size).shape == (0, h, w)


def test_baseline_registry():
    assert set(BASELINES) == {"full_image", "centred_ellipse", "random"}
    with pytest.raises(ValueError, match="positive size"):
        full_image_maps(2, 0)


def test_random_maps_are_reproducible():
    assert torch.equal(random_maps(2, 16, seed=7), random_maps(2, 16, seed=7))
    assert not torch.equal(random_maps(2, 16, seed=7), random_maps(2, 16, seed=8))
    maps = random_maps(4, 64, seed=0)
    assert 0.45 < float(maps.mean()) < 0.55 and float(maps.std()) > 0.25


def test_full_image_at_half_scores_mask_area_fraction():
    g = torch.Generator().manual_seed(5)
    masks = torch.zeros(3, 20, 30, dtype=torch.bool)
    masks[0, 2:6, 3:9] = True
    masks[1] = torch.rand(20, 30, generator=g) < 0.08
    masks[2, :, :] = True
    iou = iou_curve(full_image_maps(3, (20, 30)), masks, [0.5, 1.0, 1e-6])
    area = masks.flatten(1).double().mean(1)
    for row in iou:
        assert torch.equal(row, area)


def test_centred_ellipse_traces_nested_centred_ellipses():
    h, w = 40, 60
    m = centred_ellipse_maps(2, (h, w))[0]
    assert torch.equal(m, centred_ellipse_maps(2, (h, w))[1])
    # symmetric about the centre, maximal there, smallest in the corners
    assert torch.equal(m, m.flip(0)) and torch.equal(m, m.flip(1))
    assert float(m[h // 2, w // 2]) == float(m.max()) and float(m[0, 0]) == float(m.min())
    # threshold 1 - 1/sqrt(2) is the inscribed ellipse: area ~ pi/4 of the image
    inscribed = (m >= 1 - 1 / math.sqrt(2)).double().mean()
    assert abs(float(inscribed) - math.pi / 4) < 0.02
    # higher thresholds give nested, smaller regions; check the formula at one pixel
    areas = [float((m >= t).double().mean()) for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert areas == sorted(areas, reverse=True) and areas[-1] > 0
    y, x = (5 + 0.5 - h / 2) / (h / 2), (7 + 0.5 - w / 2) / (w / 2)
    assert float(m[5, 7]) == pytest.approx(1 - math.hypot(y, x) / math.sqrt(2), rel=1e-6)
    np.testing.assert_array_less(-1e-9, m.numpy())
