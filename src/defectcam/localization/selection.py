"""The protocol: choose the threshold (and nothing else) on validation mIoU, report it on test.

``evaluate_localization`` chooses the threshold from the validation split alone, and only then
reads the test split; fixed thresholds (0.5, and 0.15 as in the LayerCAM localization code) are
reported beside it. Maps are scoring maps (N, H, W) in [0, 1]; masks are boolean (N, H, W).

Definitions (every score a fraction in [0, 1]):
- ``miou``: mean per-image defect IoU over the defective images of the split.
- ``dataset_iou``: sum of intersections / sum of unions over the defective images.
- ``two_class_miou``: mean of background and defect IoU, pixels pooled over all images of the
  split (what weakly supervised segmentation papers on DAGM report).
- ``false_alarm``: mean fraction of pixels predicted positive on the defect-free images of the
  split; NaN if the split has none.
- ``pixel_auroc``, ``pxap``: threshold-free, pixels of the defective test images pooled; NaN on
  validation rows (not computed there) and when ``pixel_metrics=False``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from defectcam.localization.iou import (
    _check_maps,
    as_bool_masks,
    confusion_curve,
    dataset_iou,
    false_alarm_area,
    iou_from_counts,
    two_class_miou,
)
from defectcam.localization.pixel_scores import pixel_scores

ROW_KEYS = (
    "split",
    "selection",
    "threshold",
    "miou",
    "dataset_iou",
    "two_class_miou",
    "false_alarm",
    "pixel_auroc",
    "pxap",
    "n_defective",
    "n_defect_free",
)
CURVE_KEYS = ("split", "threshold", "miou", "dataset_iou", "two_class_miou", "false_alarm")


def default_thresholds(n: int = 101) -> Tensor:
    """n -> float64 (n,) grid k / (n - 1), k = 0..n-1, each the double nearest to k / (n - 1).

    Built as ``arange(n) / (n - 1)`` (one correctly rounded division) rather than ``linspace``
    (which accumulates steps), so for n = 101 ``t[15] == 0.15`` and ``t[50] == 0.5`` exactly as
    a user typing 0.15 or 0.5 gets them.
    """
    if n < 2:
        raise ValueError(f"need at least 2 thresholds, got n={n}")
    return torch.arange(n, dtype=torch.float64) / (n - 1)


def miou(iou: Tensor, defective: Tensor) -> Tensor:
    """iou (T, N), defective (N,) bool -> float64 (T,) mean per-image IoU over defective images."""
    defective = torch.as_tensor(defective, device=iou.device)
    if iou.ndim != 2 or defective.dtype != torch.bool or defective.shape != iou.shape[1:]:
        raise ValueError(
            f"need iou (T, N) and a bool defective (N,), got iou {tuple(iou.shape)}, "
            f"defective {defective.dtype} {tuple(defective.shape)}"
        )
    if not bool(defective.any()):
        raise ValueError("mIoU needs at least one defective image (non-empty mask), got none")
    return iou[:, defective].to(torch.float64).mean(1)


def select_threshold(val_iou: Tensor, val_defective: Tensor, thresholds: Tensor) -> tuple[float, float]:
    """val_iou (T, N), val_defective (N,), thresholds (T,) -> (threshold, val mIoU) at the best val mIoU.

    Ties (equal mIoU, e.g. thresholds between the same two map values) go to the lowest threshold.
    """
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64, device=val_iou.device)
    curve = miou(val_iou, val_defective)
    if thresholds.shape != curve.shape:
        raise ValueError(f"thresholds {tuple(thresholds.shape)} do not match val_iou {tuple(val_iou.shape)}")
    best = curve.max()
    threshold = thresholds[curve == best].min()
    return float(threshold), float(best)


@dataclass(frozen=True)
class SplitCurves:
    """Every threshold-dependent score of one split, each float64 (T,), plus per-image IoU (T, N)."""

    thresholds: Tensor
    iou: Tensor
    defective: Tensor
    miou: Tensor
    dataset_iou: Tensor
    two_class_miou: Tensor
    false_alarm: Tensor


def split_curves(maps: Tensor, masks: Tensor, thresholds: Tensor, split: str = "split") -> SplitCurves:
    """maps (N,H,W), masks (N,H,W), thresholds (T,) -> SplitCurves; ValueError if no defective image."""
    _check_maps(maps)
    masks = as_bool_masks(masks, maps)
    defective = masks.flatten(1).any(1)
    if not bool(defective.any()):
        raise ValueError(f"the {split} split has no defective image (every mask is empty)")
    tp, fp, fn = confusion_curve(maps, masks, thresholds)
    n_pixels = maps.shape[1] * maps.shape[2]
    iou = iou_from_counts(tp, fp, fn)
    return SplitCurves(
        thresholds=torch.as_tensor(thresholds, dtype=torch.float64).cpu(),
        iou=iou,
        defective=defective,
        miou=miou(iou, defective),
        dataset_iou=dataset_iou(tp, fp, fn, defective),
        two_class_miou=two_class_miou(tp, fp, fn, n_pixels),
        false_alarm=false_alarm_area(fp, n_pixels, ~defective),
    )


@dataclass(frozen=True)
class LocalizationResult:
    """Rows (one per split x selection, keys ROW_KEYS) and curves (one per split x grid threshold)."""

    threshold: float
    val_miou: float
    rows: list[dict[str, str | float | int]]
    curves: list[dict[str, str | float]]


def _select_on_validation(
    val_maps: Tensor, val_masks: Tensor, thresholds: Tensor, n_grid: int
) -> tuple[SplitCurves, float, float]:
    """Validation only: curves at every threshold and the val-best grid threshold and its mIoU."""
    val = split_curves(val_maps, val_masks, thresholds, "validation")
    threshold, best = select_threshold(val.iou[:n_grid], val.defective, thresholds[:n_grid])
    return val, threshold, best


def _row(curves: SplitCurves, i: int, split: str, selection: str, threshold: float) -> dict:
    """One result row at threshold index i of a split (pixel scores NaN; filled in for test)."""
    n_defective = int(curves.defective.sum())
    return {
        "split": split,
        "selection": selection,
        "threshold": threshold,
        "miou": float(curves.miou[i]),
        "dataset_iou": float(curves.dataset_iou[i]),
        "two_class_miou": float(curves.two_class_miou[i]),
        "false_alarm": float(curves.false_alarm[i]),
        "pixel_auroc": math.nan,
        "pxap": math.nan,
        "n_defective": n_defective,
        "n_defect_free": int(curves.defective.numel()) - n_defective,
    }


def _curve_rows(curves: SplitCurves, split: str, n_grid: int) -> list[dict[str, str | float]]:
    """One curve row per grid threshold of a split."""
    cols = {k: getattr(curves, k)[:n_grid].tolist() for k in CURVE_KEYS[2:]}
    thresholds = curves.thresholds[:n_grid].tolist()
    return [{"split": split, "threshold": t, **{k: v[i] for k, v in cols.items()}} for i, t in enumerate(thresholds)]


def evaluate_localization(
    val_maps: Tensor,
    val_masks: Tensor,
    test_maps: Tensor,
    test_masks: Tensor,
    thresholds: Tensor | Sequence[float] | None = None,
    fixed_thresholds: Sequence[float] = (0.5, 0.15),
    pixel_metrics: bool = True,
) -> LocalizationResult:
    """val/test maps (N,H,W) in [0,1] and masks (N,H,W) -> rows and curves of one method/layer.

    The threshold maximizing validation mIoU over ``thresholds`` (default: default_thresholds())
    is chosen before the test split is read. Rows, for the val-best threshold and then each
    fixed threshold: the test row, then the validation row (``selection`` "val-best" or
    "fixed"). Curves: every score at every grid threshold, validation then test.
    """
    grid = default_thresholds() if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)
    fixed = torch.as_tensor(list(fixed_thresholds), dtype=torch.float64)
    if grid.ndim != 1 or grid.numel() == 0 or fixed.ndim != 1:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {tuple(grid.shape)}")
    n_grid = grid.numel()
    all_thresholds = torch.cat([grid.cpu(), fixed])

    val, threshold, val_best = _select_on_validation(val_maps, val_masks, all_thresholds, n_grid)
    # The threshold is fixed from here on; the test split is read only below.
    test = split_curves(test_maps, test_masks, all_thresholds, "test")
    scores = (math.nan, math.nan)
    if pixel_metrics:
        defective = test.defective.to(test_maps.device)
        scores = pixel_scores(test_maps[defective], as_bool_masks(test_masks, test_maps)[defective])

    best_index = int(torch.nonzero(grid.cpu() == threshold)[0])
    choices = [("val-best", best_index, threshold)]
    choices += [("fixed", n_grid + j, float(t)) for j, t in enumerate(fixed.tolist())]
    rows = []
    for selection, i, t in choices:
        test_row = _row(test, i, "test", selection, t)
        test_row["pixel_auroc"], test_row["pxap"] = float(scores[0]), float(scores[1])
        rows += [test_row, _row(val, i, "val", selection, t)]
    curves = _curve_rows(val, "val", n_grid) + _curve_rows(test, "test", n_grid)
    return LocalizationResult(threshold=threshold, val_miou=val_best, rows=rows, curves=curves)
