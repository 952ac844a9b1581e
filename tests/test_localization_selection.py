"""Scores of one split at many thresholds: the grid, mIoU over defective images, curves from labels."""

import pytest
import torch

from defectcam.localization import (
    default_thresholds,
    iou_curve,
    miou,
    select_threshold,
    split_curves,
)


def split(seed, n=10, size=24, n_free=3):
    """Blob defects with a noisy map peaking on the defect; the last n_free images are defect-free."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n - n_free):
        y, x = (int(v) for v in torch.randint(2, size - 10, (2,), generator=g))
        masks[i, y : y + 6, x : x + 8] = True
    maps = 0.6 * torch.rand(n, size, size, generator=g) + 0.5 * masks
    maps = maps / maps.flatten(1).amax(1).view(n, 1, 1)
    return maps, masks


def test_default_thresholds_are_exact_decimals():
    t = default_thresholds()
    assert t.dtype == torch.float64 and t.shape == (101,)
    assert all(t[k].item() == float(f"{k / 100}") for k in range(101))
    assert t[15].item() == 0.15 and t[50].item() == 0.5 and t[0] == 0 and t[-1] == 1
    assert default_thresholds(11)[3].item() == 0.3
    with pytest.raises(ValueError):
        default_thresholds(1)


def test_miou_is_mean_over_defective_images_only():
    iou = torch.tensor([[0.2, 0.4, 0.0], [0.6, 0.8, 0.0]], dtype=torch.float64)
    defective = torch.tensor([True, True, False])
    assert miou(iou, defective).tolist() == pytest.approx([0.3, 0.7])
    with pytest.raises(ValueError, match="defective"):
        miou(iou, torch.zeros(3, dtype=torch.bool))


def test_select_threshold_maximizes_val_miou_and_breaks_ties_low():
    maps, masks = split(0)
    grid = default_thresholds()
    iou = iou_curve(maps, masks, grid)
    defective = masks.flatten(1).any(1)
    t, best = select_threshold(iou, defective, grid)
    curve = miou(iou, defective)
    assert best == float(curve.max()) and curve[grid == t].item() == best
    assert (curve[grid < t] < best).all()
    # ties: equal mIoU at 0.3, 0.6 and 0.7 -> 0.3, whatever the order of the thresholds
    tied = torch.tensor([[0.1], [0.5], [0.5], [0.2], [0.5]], dtype=torch.float64)
    thresholds = torch.tensor([0.9, 0.6, 0.3, 0.1, 0.7], dtype=torch.float64)
    assert select_threshold(tied, torch.tensor([True]), thresholds) == (0.3, 0.5)


def test_false_alarms_are_nan_without_defect_free_images():
    maps, masks = split(5, n_free=0)
    curves = split_curves(maps, masks, default_thresholds(11))
    assert torch.isnan(curves.false_alarm).all() and torch.isnan(curves.image_false_alarm).all()
    assert torch.equal(curves.all_miou, curves.miou)  # every image is defective


def test_splits_without_defective_images_are_rejected():
    maps, masks = split(7)
    with pytest.raises(ValueError, match="validation split has no defective"):
        split_curves(maps, torch.zeros_like(masks), default_thresholds(11), "validation")


def test_labels_not_masks_decide_what_is_defective():
    maps, masks = split(8)
    labels = masks.flatten(1).any(1)
    labels[-1] = True  # a defective label whose mask is empty counts (and scores 0), never silently dropped
    curves = split_curves(maps, masks, default_thresholds(11), defective=labels)
    assert curves.defective.sum() == 8 and (curves.iou[:, -1] == 0).all()
