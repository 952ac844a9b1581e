"""Threshold sweep: confusion counts and IoU equal binarizing at every threshold, exactly."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_jaccard_index

from defectcam.localization import (
    confusion_curve,
    dataset_iou,
    default_thresholds,
    false_alarm_area,
    iou_curve,
    two_class_miou,
)


def naive_counts(maps, masks, thresholds):
    """Binarize T times: float16 maps upcast to float32 (the documented semantics)."""
    m = maps if maps.dtype == torch.float64 else maps.float()
    tp, fp, fn = [], [], []
    for t in torch.as_tensor(thresholds, dtype=torch.float64).tolist():
        pred = m >= t  # a Python float compares in m's dtype
        tp.append((pred & masks).sum((1, 2)))
        fp.append((pred & ~masks).sum((1, 2)))
        fn.append((~pred & masks).sum((1, 2)))
    return torch.stack(tp), torch.stack(fp), torch.stack(fn)


def naive_iou(maps, masks, thresholds):
    tp, fp, fn = naive_counts(maps, masks, thresholds)
    union = (tp + fp + fn).double()
    return torch.where(union > 0, tp.double() / union.clamp_min(1), torch.zeros_like(union))


def tied_case(dtype, seed=0, n=7, h=13, w=11):
    """Maps drawn from the threshold grid itself (plus 0 and 1), special masks, unsorted thresholds."""
    g = torch.Generator().manual_seed(seed)
    grid = default_thresholds(101)
    maps = grid[torch.randint(0, 101, (n, h, w), generator=g)].to(dtype)
    masks = torch.rand(n, h, w, generator=g) < 0.3
    masks[0] = False  # empty mask
    masks[1] = True  # full mask
    maps[2] = 0.0  # empty prediction for every t > 0
    maps[3] = 1.0  # full prediction for every t <= 1
    thresholds = torch.cat([grid, torch.tensor([1.5, -0.5, 0.5, 0.15], dtype=torch.float64)])
    thresholds = thresholds[torch.randperm(thresholds.numel(), generator=g)]
    return maps, masks, thresholds


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_iou_curve_equals_naive_binarization_on_tied_values(dtype):
    maps, masks, thresholds = tied_case(dtype)
    got = iou_curve(maps, masks, thresholds)
    assert got.dtype == torch.float64 and got.shape == (thresholds.numel(), maps.shape[0])
    assert torch.equal(got, naive_iou(maps, masks, thresholds))
    for a, b in zip(confusion_curve(maps, masks, thresholds), naive_counts(maps, masks, thresholds)):
        assert a.dtype == torch.int64
        assert torch.equal(a, b)


def test_special_images_and_thresholds():
    maps, masks, thresholds = tied_case(torch.float32)
    iou = iou_curve(maps, masks, thresholds)
    above_all, below_all = int(torch.nonzero(thresholds == 1.5)), int(torch.nonzero(thresholds == -0.5))
    assert (iou[above_all] == 0).all()  # empty predictions score 0 (empty unions too)
    area = masks.flatten(1).double().mean(1)
    assert torch.equal(iou[below_all], area)  # full predictions score the mask area fraction
    assert (iou[:, 0] == 0).all()  # empty mask: 0 whatever the prediction
    assert torch.equal(iou[:, 1], maps[1].ge(thresholds[:, None, None].float()).flatten(1).double().mean(1))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_chunk_sizes_give_identical_results(chunk_size):
    maps, masks, thresholds = tied_case(torch.float32, seed=1)
    assert torch.equal(iou_curve(maps, masks, thresholds, chunk_size), iou_curve(maps, masks, thresholds))


def test_float16_maps_compare_in_float32():
    # float16(0.1) = 0.0999755859375 < float32(0.1): a float16 comparison would call it positive
    maps = torch.full((1, 2, 2), 0.1, dtype=torch.float16)
    masks = torch.ones(1, 2, 2, dtype=torch.bool)
    tp, _, _ = confusion_curve(maps, masks, [0.1])
    assert int(tp) == 0 and bool((maps >= 0.1).all())
    assert int(confusion_curve(maps, masks, [float(maps[0, 0, 0])])[0]) == 4


@pytest.mark.parametrize(
    "thresholds",
    [
        [0.5, 0.5 + 1e-9, 0.5 - 1e-7, 0.2, 0.2, 1.0, 0.0],  # closer than any cell: bucketize path
        [float("-inf"), 0.3, float("inf"), 0.7],  # infinite: bucketize path
        [0.3],  # single threshold
        [0.7, 0.3, 0.7, 0.3],  # repeated, unsorted
    ],
)
def test_irregular_thresholds_and_nan_values(thresholds):
    g = torch.Generator().manual_seed(2)
    pool = torch.tensor(thresholds + [0.0, 1.0, 0.25, float("nan"), float("inf"), float("-inf")])
    maps = pool[torch.randint(0, pool.numel(), (4, 9, 8), generator=g)]
    masks = torch.rand(4, 9, 8, generator=g) < 0.5
    for a, b in zip(confusion_curve(maps, masks, thresholds), naive_counts(maps, masks, thresholds)):
        assert torch.equal(a, b)


def test_random_fuzz_against_naive():
    g = torch.Generator().manual_seed(3)
    for trial in range(30):
        n, h, w = (int(torch.randint(1, 12, (1,), generator=g)) for _ in range(3))
        thresholds = torch.rand(int(torch.randint(1, 40, (1,), generator=g)), generator=g, dtype=torch.float64)
        pool = torch.cat([thresholds, torch.rand(20, generator=g, dtype=torch.float64)])
        dtype = (torch.float16, torch.float32, torch.float64)[trial % 3]
        maps = pool[torch.randint(0, pool.numel(), (n, h, w), generator=g)].to(dtype)
        masks = torch.rand(n, h, w, generator=g) < 0.4
        assert torch.equal(iou_curve(maps, masks, thresholds, chunk_size=2), naive_iou(maps, masks, thresholds))


def test_integer_masks_are_converted():
    maps, masks, thresholds = tied_case(torch.float32)
    assert torch.equal(iou_curve(maps, masks.to(torch.uint8), thresholds), iou_curve(maps, masks, thresholds))
    assert torch.equal(iou_curve(maps, masks.long(), thresholds), iou_curve(maps, masks, thresholds))


@pytest.mark.parametrize("t", [0.1, 0.37, 0.5, 0.9])
def test_iou_matches_torchmetrics_jaccard_per_image(t):
    # torchmetrics binarizes with `>` (ours is `>=`): continuous random maps have no value at t
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(5, 16, 16, generator=g, dtype=torch.float64).float()
    masks = torch.rand(5, 16, 16, generator=g) < 0.2
    assert not (maps == t).any()
    ours = iou_curve(maps, masks, [t])[0]
    ref = torch.stack([binary_jaccard_index(maps[i], masks[i].long(), threshold=t) for i in range(5)])
    torch.testing.assert_close(ours, ref.double(), rtol=1e-6, atol=1e-7)


def test_shape_and_value_errors():
    maps = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match=r"maps \(2, 4, 4\), masks \(2, 4, 5\)"):
        iou_curve(maps, torch.zeros(2, 4, 5, dtype=torch.bool), [0.5])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        iou_curve(torch.rand(4, 4), torch.zeros(4, 4, dtype=torch.bool), [0.5])
    with pytest.raises(ValueError, match="floating"):
        iou_curve(torch.ones(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.bool), [0.5])
    with pytest.raises(ValueError, match="0 and 1"):
        iou_curve(maps, torch.full((2, 4, 4), 2), [0.5])
    with pytest.raises(ValueError, match="NaN"):
        iou_curve(maps, maps > 0.5, [0.5, float("nan")])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        iou_curve(maps, maps > 0.5, [])
    with pytest.raises(ValueError, match="chunk_size"):
        iou_curve(maps, maps > 0.5, [0.5], chunk_size=0)


def hand_case():
    """Two thresholds, three 2x2 images: counts easy to verify by eye."""
    maps = torch.tensor(
        [
            [[0.9, 0.6], [0.2, 0.1]],  # defective: mask top row
            [[0.7, 0.3], [0.3, 0.8]],  # defective: mask bottom-right
            [[0.6, 0.1], [0.0, 0.4]],  # defect-free
        ]
    )
    masks = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 1]], [[0, 0], [0, 0]]], dtype=torch.bool)
    return maps, masks, [0.5, 0.25]


def test_hand_counts_and_pooled_scores():
    maps, masks, thresholds = hand_case()
    tp, fp, fn = confusion_curve(maps, masks, thresholds)
    # t=0.5: img0 P={.9,.6} tp2 fp0 fn0; img1 P={.7,.8} tp1 fp1 fn0; img2 P={.6} fp1
    # t=0.25: img0 tp2 fp0; img1 P={.7,.3,.3,.8} tp1 fp3; img2 P={.6,.4} fp2
    np.testing.assert_array_equal(tp.numpy(), [[2, 1, 0], [2, 1, 0]])
    np.testing.assert_array_equal(fp.numpy(), [[0, 1, 1], [0, 3, 2]])
    np.testing.assert_array_equal(fn.numpy(), [[0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(iou_curve(maps, masks, thresholds).numpy(), [[1.0, 0.5, 0.0], [1.0, 0.25, 0.0]])

    defective = torch.tensor([True, True, False])
    np.testing.assert_allclose(dataset_iou(tp, fp, fn, defective).numpy(), [3 / 4, 3 / 6])
    np.testing.assert_allclose(dataset_iou(tp, fp, fn).numpy(), [3 / 5, 3 / 8])  # all images
    np.testing.assert_allclose(false_alarm_area(fp, 4, ~defective).numpy(), [1 / 4, 2 / 4])
    np.testing.assert_allclose(false_alarm_area(fp, 4, defective).numpy(), [(0 + 1 / 4) / 2, (0 + 3 / 4) / 2])
    assert torch.isnan(false_alarm_area(fp, 4, torch.zeros(3, dtype=torch.bool))).all()

    # 12 pixels, 3 defect pixels. t=0.5: TP3 FP2 FN0 TN7; t=0.25: TP3 FP5 FN0 TN4
    expected = [(3 / 5 + 7 / 9) / 2, (3 / 8 + 4 / 9) / 2]
    np.testing.assert_allclose(two_class_miou(tp, fp, fn, 4).numpy(), expected)
    np.testing.assert_allclose(
        two_class_miou(tp, fp, fn, 4, defective).numpy(), [(3 / 4 + 4 / 5) / 2, (3 / 6 + 2 / 5) / 2]
    )
    with pytest.raises(ValueError, match="image_mask"):
        dataset_iou(tp, fp, fn, torch.tensor([1, 0, 1]))
