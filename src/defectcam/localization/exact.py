"""The best threshold over every distinct map value, found exactly in one sort.

A threshold grid misses optima that sit between its steps: on real DAGM the validation optimum of
LayerCAM sat below 0.01, the first step of a 101-point grid. Here every distinct value of the
validation maps is a candidate, at the cost of two sorts:

1. Per defective image, sort its pixels by value (descending) and take running counts of mask
   and non-mask pixels: pixel k of image i, once predicted, moves that image's IoU from
   ``tp / (|G_i| + fp)`` before it to the same ratio after it. Call the difference its *gain*.
2. Sort every pixel of every defective image by value (descending) and cumulate the gains: at
   the last pixel of each run of equal values v, the cumulative gain is sum_i IoU_i(v), the
   total IoU at threshold v (prediction ``map >= v``), exactly, whatever the order within a run.

mIoU(v) = sum_i IoU_i(v) / n_defective. all-mIoU adds the defect-free images, which score 1
while nothing is predicted on them (their max < v) and 0 otherwise, so it needs only each
defect-free image's maximum. Between two consecutive defective-image values the IoU sum is
constant and the defect-free term can only grow with v, so the candidates above (plus a
threshold over every value, which predicts nothing) contain the optimum of both scores.

A gate (classifier decision) predicts nothing on the images it rejects: their gains are dropped
and, if defect-free, they always score 1. Pure numpy/torch; no Hydra, no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SELECT_SCORES = ("miou", "all_miou")


@dataclass(frozen=True)
class SortedPixels:
    """Pixels of the defective images in descending value order, with their IoU gains."""

    values: np.ndarray  # (P,) float64, descending; pixels never predicted (-inf, NaN) left out
    gains: np.ndarray  # (P,) float64 IoU gain of the pixel's image when the pixel joins the prediction
    image: np.ndarray  # (P,) int64 index into the split's images
    free_max: np.ndarray  # (F,) float64 max value of each defect-free image (-inf if none predicted ever)
    free_index: np.ndarray  # (F,) int64 index of each defect-free image in the split
    n_defective: int
    n_images: int
    dtype: type  # the compute dtype (np.float32 or np.float64) predictions compare in


def _as_numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def sort_pixels(maps: Tensor, masks: Tensor, defective: Tensor) -> SortedPixels:
    """maps (N,H,W) float, masks (N,H,W) bool, defective (N,) bool -> SortedPixels of the split.

    Defective images must have a non-empty mask (their IoU denominator); ValueError otherwise.
    """
    if maps.ndim != 3 or masks.shape != maps.shape or defective.shape != maps.shape[:1]:
        raise ValueError(f"need maps (N,H,W), masks of the same shape and defective (N,), got "
                         f"{tuple(maps.shape)}, {tuple(masks.shape)}, {tuple(defective.shape)}")
    # Compared in float32 (float64 maps in float64), as confusion_curve does.
    values = _as_numpy(maps.reshape(maps.shape[0], -1).to(torch.float64 if maps.dtype == torch.float64 else torch.float32))
    truth = _as_numpy(masks.reshape(masks.shape[0], -1).bool())
    labels = _as_numpy(defective.bool())
    rows = np.flatnonzero(labels)
    area = truth[rows].sum(1)
    if (area == 0).any():
        raise ValueError(f"defective image(s) {rows[area == 0].tolist()} have an empty mask")
    flat_values = values[rows].reshape(-1)
    # One sort of every pixel (descending; NaN and -inf last), then a radix sort by image that keeps
    # that order inside each image: running counts per image without a per-image sort.
    order = np.argsort(-flat_values)
    sorted_values = flat_values[order].astype(np.float64)
    sorted_truth = truth[rows].reshape(-1)[order]
    image_of = (order // values.shape[1]).astype(np.int16 if len(rows) < 2**15 else np.int64)
    by_image = np.argsort(image_of, kind="stable")
    truth_by_image = sorted_truth[by_image]
    starts = np.searchsorted(image_of[by_image], np.arange(len(rows)))
    tp = _running_count(truth_by_image, starts)
    fp = _running_count(~truth_by_image, starts)
    iou_after = tp / (area[image_of[by_image]] + fp)
    gains_by_image = np.diff(iou_after, prepend=0.0)
    gains_by_image[starts] = iou_after[starts]  # the first pixel of each image starts from IoU 0
    gains = np.empty_like(gains_by_image)
    gains[by_image] = gains_by_image
    live = ~np.isnan(sorted_values) & (sorted_values > -np.inf)  # NaN and -inf are never >= a threshold
    free = np.flatnonzero(~labels)
    free_values = values[free]
    free_max = np.where(np.isnan(free_values), -np.inf, free_values).max(1, initial=-np.inf).astype(np.float64)
    return SortedPixels(
        values=sorted_values[live],
        gains=gains[live],
        image=rows[image_of[live]],
        free_max=free_max,
        free_index=free,
        n_defective=len(rows),
        n_images=int(values.shape[0]),
        dtype=values.dtype.type,
    )


def _running_count(flags: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Inclusive running count of `flags` (P,) restarting at each index of `starts` (sorted group starts)."""
    total = np.cumsum(flags, dtype=np.int64)
    before = np.concatenate([[0], total[:-1]])[starts]  # count before each group
    sizes = np.diff(np.append(starts, len(flags)))
    return total - np.repeat(before, sizes)


def exact_curve(pixels: SortedPixels, keep: Tensor | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SortedPixels, optional (N,) bool gate -> (thresholds (C,), mIoU (C,), all-mIoU (C,)), descending thresholds.

    Candidates are every distinct value of the defective images' pixels plus one threshold above
    every value of the split (nothing predicted). Gated-out images predict nothing.
    """
    keep_images = np.ones(pixels.n_images, dtype=bool) if keep is None else np.asarray(_as_numpy(torch.as_tensor(keep)), dtype=bool)
    gains = np.where(keep_images[pixels.image], pixels.gains, 0.0)
    cumulative = np.cumsum(gains)
    values = pixels.values
    run_end = np.flatnonzero(np.append(values[1:] != values[:-1], True)) if len(values) else np.zeros(0, np.int64)
    top = max(float(values[0]) if len(values) else -np.inf, float(pixels.free_max.max(initial=-np.inf)))
    # The next representable value in the compute dtype, so that the threshold survives the cast.
    above_all = float(np.nextafter(pixels.dtype(top), pixels.dtype(np.inf))) if np.isfinite(top) else 1.0
    thresholds = np.concatenate([[above_all], values[run_end]])
    iou_sum = np.concatenate([[0.0], cumulative[run_end]])
    free_max = np.where(keep_images[pixels.free_index], pixels.free_max, -np.inf)
    quiet_free = np.searchsorted(np.sort(free_max), thresholds, side="left")  # defect-free images with max < t
    miou = iou_sum / max(pixels.n_defective, 1)
    all_miou = (iou_sum + quiet_free) / max(pixels.n_images, 1)
    return thresholds, miou, all_miou


def best_exact_threshold(
    pixels: SortedPixels, keep: Tensor | np.ndarray | None = None, select_on: str = "miou"
) -> tuple[float, float]:
    """(threshold, validation score) maximizing `select_on` over every distinct value; ties go to the lowest threshold."""
    return score_at_best_threshold(pixels, keep, select_on, select_on)


def score_at_best_threshold(
    pixels: SortedPixels, keep: Tensor | np.ndarray | None, select_on: str, report: str
) -> tuple[float, float]:
    """(the threshold best_exact_threshold picks by `select_on`, the `report` score at that threshold).

    With report == select_on this is the best score itself. A different `report` scores a map where it will be
    used: e.g. all-mIoU at the mIoU threshold counts the defect-free images an mIoU-chosen threshold flags,
    which the mIoU never sees."""
    for name, value in (("select_on", select_on), ("report", report)):
        if value not in SELECT_SCORES:
            raise ValueError(f"{name} must be one of {SELECT_SCORES}, got {value!r}")
    thresholds, miou, all_miou = exact_curve(pixels, keep)
    curves = {"miou": miou, "all_miou": all_miou}
    score = curves[select_on]
    best = score.max()
    # Floating sums of the same IoUs in another order may differ in the last bits: treat those as ties.
    tied = np.flatnonzero(score >= best - 1e-12)
    index = tied[np.argmin(thresholds[tied])]
    return float(thresholds[index]), float(curves[report][index])
