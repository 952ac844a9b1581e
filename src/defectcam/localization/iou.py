"""Threshold sweeps of binarized maps: confusion counts and IoU for every threshold in one pass.

Semantics shared by every function here: the prediction of image ``n`` at threshold ``t`` is
``maps[n] >= t``, compared in the *compute dtype*: float64 for float64 maps, float32 for every
other dtype (float16 / bfloat16 maps are upcast to float32 first; thresholds are cast to the
compute dtype). This is exactly what ``maps.float() >= t`` gives for a Python float ``t``.
A NaN map value is never predicted positive (``NaN >= t`` is False).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Pixels per chunk of ``confusion_curve`` (whole maps; at least one map per chunk). Measured on a
# 2-core CPU, 96 maps x 101 thresholds (benchmarks/bench_sweep.py): chunks of 2**19 pixels
# (8 maps at 256x256, 2 at 512x512) keep the per-pixel temporaries in cache and run 3-5x faster
# than the whole stack at once; chunks of 4M pixels are already 3.5x slower.
DEFAULT_CHUNK_PIXELS = 1 << 19


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is compared in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_maps(maps: Tensor) -> None:
    """Raise ValueError unless maps is a floating (N, H, W) tensor."""
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor of shape (N, H, W), got {shape}")
    if not maps.is_floating_point():
        raise ValueError(f"maps must be a floating tensor (float16/32/64), got {maps.dtype}")


def as_bool_masks(masks: Tensor, maps: Tensor) -> Tensor:
    """Boolean (N, H, W) masks on maps' device from bool or 0/1 (N, H, W) masks matching maps."""
    if not isinstance(masks, Tensor) or tuple(masks.shape) != tuple(maps.shape):
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(
            f"masks must have the same shape as maps: maps {tuple(maps.shape)}, masks {shape}"
        )
    masks = masks.to(maps.device)
    if masks.dtype == torch.bool:
        return masks
    if not ((masks == 0) | (masks == 1)).all():
        raise ValueError(f"masks must be boolean or contain only 0 and 1, got other values ({masks.dtype})")
    return masks != 0


def _check_thresholds(thresholds: Tensor | list[float] | tuple[float, ...], device: torch.device) -> Tensor:
    """Thresholds as a 1-D float64 tensor on device; ValueError if empty or NaN."""
    t = torch.as_tensor(thresholds, dtype=torch.float64, device=device)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {tuple(t.shape)}")
    if torch.isnan(t).any():
        raise ValueError("thresholds must not contain NaN")
    return t


@dataclass(frozen=True)
class _CellTable:
    """A monotone value -> cell map where every cell holds at most one distinct threshold."""

    lo: float  # smallest threshold (compute dtype, exact)
    scale: float  # cells per unit (a compute-dtype value)
    n_cells: int
    upper: Tensor  # (L,) the threshold inside each cell, +inf where none
    interval_of: Tensor  # (2L,) interval index of (cell, value >= upper[cell])


def _cells(values: Tensor, lo: float, scale: float, n_cells: int) -> Tensor:
    """int32 cell of each value: clamp(floor((v - lo) * scale), 0, L-1); NaN -> cell 0."""
    x = values.sub(lo).mul_(scale).nan_to_num_(nan=0.0)
    return x.clamp_(0, n_cells - 1).to(torch.int32)


def _cell_table(bounds: Tensor) -> _CellTable | None:
    """Cell table for sorted finite thresholds, or None if none separates them (use bucketize).

    Why it is exact: v -> cell(v) is monotone (IEEE subtraction and multiplication by a positive
    constant round monotonically), so a threshold in a lower cell is < v, one in a higher cell
    is > v, and only the single threshold value sharing v's cell needs a real comparison.
    """
    lo, hi = float(bounds[0]), float(bounds[-1])
    if bounds.numel() < 2 or not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return None
    dtype, device, n_t = bounds.dtype, bounds.device, bounds.numel()
    for factor in (8, 64, 512):
        n_cells = min(factor * n_t, 1 << 22)
        scale = float(torch.tensor(n_cells / (hi - lo), dtype=dtype))
        if not math.isfinite(scale):
            return None
        cb = _cells(bounds, lo, scale, n_cells).to(torch.int64)
        same_cell = cb[1:] == cb[:-1]
        if bool((bounds[1:][same_cell] == bounds[:-1][same_cell]).all()):
            break
    else:
        return None
    upper = torch.full((n_cells,), math.inf, dtype=dtype, device=device)
    upper[cb] = bounds
    mult = torch.bincount(cb, minlength=n_cells)
    base = mult.cumsum(0) - mult  # thresholds in lower cells
    interval_of = torch.stack([base, base + mult], dim=1).view(-1)
    return _CellTable(lo, scale, n_cells, upper, interval_of)


def _chunk_counts_cells(maps: Tensor, masks: Tensor, table: _CellTable, n_t: int) -> Tensor:
    """(c, 2, T+1) counts of negatives/positives of each of c maps per threshold interval."""
    c, n_bins = maps.shape[0], 2 * table.n_cells
    cells = _cells(maps, table.lo, table.scale, table.n_cells)
    above = maps >= table.upper.index_select(0, cells.view(-1)).view_as(maps)
    idx = cells.mul_(2).add_(above).add_(masks, alpha=n_bins)
    idx.add_(torch.arange(0, c * 2 * n_bins, 2 * n_bins, device=maps.device, dtype=torch.int32).view(c, 1, 1))
    hist = torch.bincount(idx.view(-1), minlength=c * 2 * n_bins).view(c, 2, n_bins)
    counts = torch.zeros((c, 2, n_t + 1), dtype=torch.int64, device=maps.device)
    return counts.index_add_(2, table.interval_of, hist)


def _chunk_counts_bucketize(maps: Tensor, masks: Tensor, bounds: Tensor) -> Tensor:
    """(c, 2, T+1) counts as _chunk_counts_cells, by binary search (any sorted thresholds)."""
    c, n_int = maps.shape[0], bounds.numel() + 1
    # interval k = number of sorted thresholds <= value, so value >= t_j  <=>  j < k
    idx = torch.bucketize(maps, bounds, right=True)
    nan = torch.isnan(maps)
    if nan.any():
        idx.masked_fill_(nan, 0)
    offsets = torch.arange(c, device=maps.device).mul_(2 * n_int).view(c, 1, 1)
    idx.add_(offsets).add_(masks.to(torch.int64).mul_(n_int))
    return torch.bincount(idx.view(-1), minlength=c * 2 * n_int).view(c, 2, n_int)


def confusion_curve(
    maps: Tensor,
    masks: Tensor,
    thresholds: Tensor | list[float] | tuple[float, ...],
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """maps (N,H,W) float, masks (N,H,W) bool, thresholds (T,) -> tp, fp, fn, each int64 (T, N).

    One pass over the pixels: place each value in one of the T+1 intervals of the sorted
    thresholds (interval k = number of thresholds <= value, i.e. ``bucketize(right=True)``),
    bincount positives and negatives per (image, interval), reverse-cumulate. The interval is
    found with a monotone cell table (one multiply, one lookup, one comparison per pixel) and
    falls back to ``torch.bucketize`` for thresholds it cannot separate (infinite, or closer
    than 1/(512 T) of their range). Thresholds may be unsorted or repeated; results come back in
    the given order. ``chunk_size`` maps are processed at a time (default: 2**19 pixels' worth).
    """
    _check_maps(maps)
    masks = as_bool_masks(masks, maps)
    t = _check_thresholds(thresholds, maps.device)
    n, h, w = maps.shape
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_CHUNK_PIXELS // max(1, h * w))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    cdtype = _compute_dtype(maps.dtype)
    bounds, order = torch.sort(t.to(cdtype))
    n_t = bounds.numel()
    counts = torch.empty((n, 2, n_t + 1), dtype=torch.int64, device=maps.device)
    table = _cell_table(bounds)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        chunk, chunk_masks = maps[start:stop].to(cdtype), masks[start:stop]
        if table is not None:
            counts[start:stop] = _chunk_counts_cells(chunk, chunk_masks, table, n_t)
        else:
            counts[start:stop] = _chunk_counts_bucketize(chunk, chunk_masks, bounds)
    # above[n, c, k] = number of pixels of class c with interval >= k; sorted threshold j -> k = j+1
    above = counts.flip(-1).cumsum(-1).flip(-1)
    tp_sorted = above[:, 1, 1:].T
    fp_sorted = above[:, 0, 1:].T
    tp = torch.empty_like(tp_sorted)
    fp = torch.empty_like(fp_sorted)
    tp[order] = tp_sorted
    fp[order] = fp_sorted
    fn = above[:, 1, 0].unsqueeze(0) - tp
    return tp, fp, fn


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den in float64, 0.0 where den == 0."""
    num, den = num.to(torch.float64), den.to(torch.float64)
    return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))


def iou_from_counts(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """Per-image IoU tp / (tp + fp + fn) as float64 (T, N); 0.0 where the union is empty."""
    return _safe_ratio(tp, tp + fp + fn)


def iou_curve(
    maps: Tensor,
    masks: Tensor,
    thresholds: Tensor | list[float] | tuple[float, ...],
    chunk_size: int | None = None,
) -> Tensor:
    """maps (N,H,W), masks (N,H,W) bool, thresholds (T,) -> per-image defect IoU float64 (T, N).

    IoU = |P & G| / |P | G| with P = maps >= t, exactly equal to binarizing T times. An empty
    prediction on a defective image scores 0; an image with an empty union (empty mask and
    empty prediction) also scores 0.0 -- only defective images enter mIoU, so this value is
    never averaged in.
    """
    return iou_from_counts(*confusion_curve(maps, masks, thresholds, chunk_size))


def _select(counts: Tensor, image_mask: Tensor | None) -> Tensor:
    """(T, N) counts restricted to the images selected by a (N,) bool mask (all if None)."""
    if image_mask is None:
        return counts
    image_mask = torch.as_tensor(image_mask, device=counts.device)
    if image_mask.dtype != torch.bool or image_mask.shape != counts.shape[1:]:
        raise ValueError(
            f"image_mask must be a bool tensor of shape ({counts.shape[1]},), "
            f"got {image_mask.dtype} {tuple(image_mask.shape)}"
        )
    return counts[:, image_mask]


def dataset_iou(tp: Tensor, fp: Tensor, fn: Tensor, image_mask: Tensor | None = None) -> Tensor:
    """(T, N) counts, optional (N,) bool selection -> (T,) float64 sum of intersections / sum of unions.

    0.0 where the pooled union is empty (no selected image, or nothing predicted and no defect).
    """
    tp, fp, fn = (_select(x, image_mask).sum(1) for x in (tp, fp, fn))
    return _safe_ratio(tp, tp + fp + fn)


def false_alarm_area(fp: Tensor, n_pixels: int, image_mask: Tensor | None = None) -> Tensor:
    """(T, N) false-positive counts, pixels per image, (N,) bool selection -> (T,) float64.

    Mean over the selected images of the fraction of pixels predicted positive; meant for the
    defect-free images of a split (where every positive pixel is a false alarm). NaN for every
    threshold when no image is selected.
    """
    if n_pixels <= 0:
        raise ValueError(f"n_pixels must be positive, got {n_pixels}")
    fp = _select(fp, image_mask).to(torch.float64)
    if fp.shape[1] == 0:
        return torch.full((fp.shape[0],), float("nan"), dtype=torch.float64, device=fp.device)
    return (fp / n_pixels).mean(1)


def two_class_miou(
    tp: Tensor, fp: Tensor, fn: Tensor, n_pixels: int, image_mask: Tensor | None = None
) -> Tensor:
    """(T, N) counts, pixels per image, optional (N,) selection -> (T,) float64 2-class mIoU.

    Pixels pooled over the selected images: mean of the background IoU TN / (TN + FP + FN) and
    the defect IoU TP / (TP + FP + FN) (a class with an empty union scores 0.0). This is the
    number weakly supervised segmentation papers on DAGM report; background dominates it.
    """
    if n_pixels <= 0:
        raise ValueError(f"n_pixels must be positive, got {n_pixels}")
    tp, fp, fn = (_select(x, image_mask) for x in (tp, fp, fn))
    total = tp.shape[1] * n_pixels
    tp, fp, fn = tp.sum(1), fp.sum(1), fn.sum(1)
    tn = total - tp - fp - fn
    return (_safe_ratio(tp, tp + fp + fn) + _safe_ratio(tn, tn + fp + fn)) / 2
