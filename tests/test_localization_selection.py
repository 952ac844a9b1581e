"""The protocol: threshold chosen on validation mIoU only, reported on test."""

import math

import pytest
import torch

from defectcam.localization import (
    CURVE_KEYS,
    ROW_KEYS,
    default_thresholds,
    evaluate_localization,
    iou_curve,
    miou,
    select_threshold,
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


def garbage(maps, kind):
    if kind == "nan":
        return torch.full_like(maps, math.nan)
    if kind == "constant":
        return torch.full_like(maps, 0.37)
    if kind == "random":
        return torch.rand(maps.shape, generator=torch.Generator().manual_seed(99))
    return 1 - maps  # inverted: the test optimum is elsewhere


@pytest.mark.parametrize("kind", ["nan", "constant", "random", "inverted"])
def test_test_split_cannot_influence_the_chosen_threshold(kind):
    (val_maps, val_masks), (test_maps, test_masks) = split(1), split(2)
    clean = evaluate_localization(val_maps, val_masks, test_maps, test_masks)
    dirty = evaluate_localization(
        val_maps, val_masks, garbage(test_maps, kind), test_masks, pixel_metrics=kind != "nan"
    )
    assert dirty.threshold == clean.threshold and dirty.val_miou == clean.val_miou
    val_rows = [r for r in clean.rows if r["split"] == "val"]
    assert val_rows == [r for r in dirty.rows if r["split"] == "val"]
    # and the choice is the val optimum, not the test one
    grid = default_thresholds()
    val_t, _ = select_threshold(iou_curve(val_maps, val_masks, grid), val_masks.flatten(1).any(1), grid)
    assert clean.threshold == val_t


def test_rows_and_curves():
    (val_maps, val_masks), (test_maps, test_masks) = split(3), split(4)
    grid = default_thresholds(51)
    res = evaluate_localization(val_maps, val_masks, test_maps, test_masks, grid, fixed_thresholds=(0.5, 0.15))
    assert [(r["split"], r["selection"], r["threshold"]) for r in res.rows] == [
        ("test", "val-best", res.threshold),
        ("val", "val-best", res.threshold),
        ("test", "fixed", 0.5),
        ("val", "fixed", 0.5),
        ("test", "fixed", 0.15),
        ("val", "fixed", 0.15),
    ]
    assert all(tuple(r) == ROW_KEYS for r in res.rows)
    for r in res.rows:
        for key in ("miou", "dataset_iou", "two_class_miou", "false_alarm"):
            assert 0.0 <= r[key] <= 1.0
        assert (r["n_defective"], r["n_defect_free"]) == (7, 3)
        if r["split"] == "test":
            assert 0.5 < r["pixel_auroc"] <= 1 and 0 < r["pxap"] <= 1
        else:
            assert math.isnan(r["pixel_auroc"]) and math.isnan(r["pxap"])

    # row values are the curves at the row's threshold (fixed 0.15 is not on the 51-grid)
    test_defective = test_masks.flatten(1).any(1)
    test_iou = iou_curve(test_maps, test_masks, [res.threshold, 0.15])
    assert res.rows[0]["miou"] == pytest.approx(float(miou(test_iou, test_defective)[0]), rel=1e-15)
    assert res.rows[4]["miou"] == pytest.approx(float(miou(test_iou, test_defective)[1]), rel=1e-15)
    assert res.rows[1]["miou"] == res.val_miou

    assert len(res.curves) == 2 * 51 and all(tuple(c) == CURVE_KEYS for c in res.curves)
    val_curve = [c for c in res.curves if c["split"] == "val"]
    assert [c["threshold"] for c in val_curve] == grid.tolist()
    assert max(c["miou"] for c in val_curve) == res.val_miou


def test_false_alarm_is_nan_without_defect_free_images():
    (val_maps, val_masks), (test_maps, test_masks) = split(5, n_free=0), split(6, n_free=0)
    res = evaluate_localization(val_maps, val_masks, test_maps, test_masks, pixel_metrics=False)
    assert all(math.isnan(r["false_alarm"]) for r in res.rows)


def test_splits_without_defective_images_are_rejected():
    (val_maps, val_masks), (test_maps, test_masks) = split(7), split(8)
    with pytest.raises(ValueError, match="validation split has no defective"):
        evaluate_localization(val_maps, torch.zeros_like(val_masks), test_maps, test_masks)
    with pytest.raises(ValueError, match="test split has no defective"):
        evaluate_localization(val_maps, val_masks, test_maps, torch.zeros_like(test_masks))
