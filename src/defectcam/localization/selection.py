"""Scores of one split at many thresholds, from confusion counts; the grid and the mIoU definitions.

Maps are scoring maps (N, H, W) in [0, 1] at the masks' own resolution; masks are boolean
(N, H, W); whether an image is defective comes from its label, (N,) bool. Every score is a
fraction in [0, 1]:

- ``miou``: mean per-image defect IoU over the defective images of the split (an empty
  prediction scores 0). The number comparable to the reference study.
- ``all_miou``: mean per-image IoU over *all* images: a defect-free image scores 1 when nothing is
  predicted on it and 0 otherwise. Dominated by defect-free images (7 in 8 on DAGM): it exposes
  maps that flag texture everywhere, but never rank methods by it alone.
- ``dataset_iou``: sum of intersections / sum of unions over the defective images.
- ``two_class_miou``: mean of background and defect IoU, pixels pooled over all images of the
  split (what weakly supervised segmentation papers on DAGM report).
- ``false_alarm``: mean fraction of pixels predicted on the defect-free images (NaN if none).
- ``image_false_alarm``: share of defect-free images with any predicted pixel (NaN if none).

A *gate* (``keep``, (N,) bool) empties the prediction of the images it rejects, e.g. those the
classifier calls defect-free: a rejected defective image then scores 0, a rejected defect-free
image 1.
"""

from __future__ import annotations

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

# Names a user types in localize.gates / localize.postprocess / localize.select_on.
GATES = ("none", "classifier")
POSTPROCESSES = ("none", "ellipse")
SELECT_ON = ("miou", "all_miou")

CURVE_SCORES = ("miou", "all_miou", "dataset_iou", "two_class_miou", "false_alarm", "image_false_alarm")


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
    """Every threshold-dependent score of one split, each float64 (T,), plus per-image scores (T, N)."""

    thresholds: Tensor
    iou: Tensor  # defect IoU per image (0 for defect-free images)
    all_iou: Tensor  # IoU per image, defect-free images included (1 when nothing is predicted on them)
    defective: Tensor
    miou: Tensor
    all_miou: Tensor
    dataset_iou: Tensor
    two_class_miou: Tensor
    false_alarm: Tensor
    image_false_alarm: Tensor


def gated_counts(tp: Tensor, fp: Tensor, fn: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(T, N) counts with the prediction of every image outside `keep` (N,) emptied."""
    if keep is None:
        return tp, fp, fn
    keep = torch.as_tensor(keep, dtype=torch.bool, device=tp.device)
    if keep.shape != tp.shape[1:]:
        raise ValueError(f"keep must be a bool tensor of shape ({tp.shape[1]},), got {tuple(keep.shape)}")
    zero = torch.zeros_like(tp)
    return torch.where(keep, tp, zero), torch.where(keep, fp, zero), torch.where(keep, fn, tp + fn)


def curves_from_counts(
    tp: Tensor, fp: Tensor, fn: Tensor, defective: Tensor, thresholds: Tensor, n_pixels: int,
    keep: Tensor | None = None, split: str = "split",
) -> SplitCurves:
    """(T, N) confusion counts, (N,) bool labels, (T,) thresholds -> SplitCurves (optionally gated)."""
    defective = torch.as_tensor(defective, dtype=torch.bool, device=tp.device)
    if not bool(defective.any()):
        raise ValueError(f"the {split} split has no defective image")
    tp, fp, fn = gated_counts(tp, fp, fn, keep)
    iou = iou_from_counts(tp, fp, fn)
    all_iou = torch.where(defective, iou, (fp == 0).to(torch.float64))
    free = ~defective
    image_false_alarm = (fp[:, free] > 0).to(torch.float64).mean(1) if bool(free.any()) else torch.full_like(iou[:, 0], float("nan"))
    return SplitCurves(
        thresholds=torch.as_tensor(thresholds, dtype=torch.float64).cpu(),
        iou=iou,
        all_iou=all_iou,
        defective=defective,
        miou=miou(iou, defective),
        all_miou=all_iou.mean(1),
        dataset_iou=dataset_iou(tp, fp, fn, defective),
        two_class_miou=two_class_miou(tp, fp, fn, n_pixels),
        false_alarm=false_alarm_area(fp, n_pixels, free),
        image_false_alarm=image_false_alarm,
    )


def split_curves(
    maps: Tensor, masks: Tensor, thresholds: Tensor, split: str = "split",
    defective: Tensor | None = None, keep: Tensor | None = None,
) -> SplitCurves:
    """maps (N,H,W), masks (N,H,W), thresholds (T,) -> SplitCurves of ``maps >= t``.

    ``defective`` (N,) bool: the labels (default: images with a non-empty mask); ``keep``: a gate.
    ValueError if no image is defective.
    """
    _check_maps(maps)
    masks = as_bool_masks(masks, maps)
    if defective is None:
        defective = masks.flatten(1).any(1)
    tp, fp, fn = confusion_curve(maps, masks, thresholds)
    return curves_from_counts(tp, fp, fn, defective, thresholds, maps.shape[1] * maps.shape[2], keep, split)
