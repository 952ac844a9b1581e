"""Threshold sweep speed: one-pass ``iou_curve`` against the loops a user would write.

All methods get identical inputs in one process: ``--maps`` scoring maps (default 96 = 8 images
x 12 method/layer maps; each image's mask is shared by its 12 maps) at each of ``--sizes``, and
``--thresholds`` thresholds (``default_thresholds``). Every baseline's IoU is checked against
ours with ``torch.equal``. Prints seconds per method and fastest-baseline / ours.

    .venv/bin/python benchmarks/bench_sweep.py --sizes 256 512 --maps 96 --thresholds 101
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification.precision_recall_curve import (
    _binary_precision_recall_curve_format,
    _binary_precision_recall_curve_update,
)

from defectcam.evaluation.latency import synchronize
from defectcam.localization import default_thresholds, iou_curve

IMAGES = 8


def make_inputs(n_maps: int, size: int, device: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Smooth CAM-like maps in [0, 1] (float32) and elliptical defect masks (bool), (n, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n_maps, 1, 16, 16, generator=g)
    maps = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = maps.flatten(1).amin(1), maps.flatten(1).amax(1)
    maps = (maps - lo[:, None, None]) / (hi - lo + 1e-7)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n_maps, size, size, dtype=torch.bool)
    for i in range(n_maps):
        j = torch.Generator().manual_seed(seed + 1 + i % IMAGES)  # 12 maps share each image's mask
        cy, cx = (torch.rand(2, generator=j) * 0.6 + 0.2) * size
        ry, rx = (torch.rand(2, generator=j) * 0.12 + 0.03) * size
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return maps.to(device), masks.to(device)


def _iou(tp: Tensor, union: Tensor) -> Tensor:
    """Same arithmetic as ours: float64 tp / union, 0 where the union is empty."""
    tp, union = tp.double(), union.double()
    return torch.where(union > 0, tp / union.clamp_min(1), torch.zeros_like(union))


def stack_loop(maps: Tensor, masks: Tensor, thresholds: Tensor) -> Tensor:
    """Baseline 1: binarize the whole stack at each threshold."""
    rows = []
    for t in thresholds.tolist():
        pred = maps >= t
        rows.append(_iou((pred & masks).sum((1, 2)), (pred | masks).sum((1, 2))))
    return torch.stack(rows)


def map_by_map(maps: Tensor, masks: Tensor, thresholds: Tensor) -> Tensor:
    """Baseline 2: for each map, for each threshold."""
    cols = []
    for m, g in zip(maps, masks):
        tp, union = [], []
        for t in thresholds.tolist():
            pred = m >= t
            tp.append((pred & g).sum())
            union.append((pred | g).sum())
        cols.append(_iou(torch.stack(tp), torch.stack(union)))
    return torch.stack(cols, dim=1)


def torchmetrics_binned(maps: Tensor, masks: Tensor, thresholds: Tensor) -> Tensor:
    """Baseline 3: torchmetrics' binned PR-curve state per map, the (T, 2, 2) confusion matrices
    that ``binary_precision_recall_curve(preds, target, thresholds=...)`` builds before it divides
    them into precision and recall. Thresholds are passed as float32 so ``preds >= t`` compares in
    float32 like ours (float64 thresholds would promote the comparison on inputs <= 50k pixels)."""
    t32 = thresholds.to(torch.float32)
    out = torch.empty(thresholds.numel(), maps.shape[0], dtype=torch.float64, device=maps.device)
    for i in range(maps.shape[0]):
        preds, target, th = _binary_precision_recall_curve_format(maps[i], masks[i].long(), t32)
        confmat = _binary_precision_recall_curve_update(preds, target, th)  # [[tn, fp], [fn, tp]]
        tp, fp, fn = confmat[:, 1, 1], confmat[:, 0, 1], confmat[:, 1, 0]
        out[:, i] = _iou(tp, tp + fp + fn)
    return out


def timed(fn: Callable[[], Tensor], repeats: int, device: str) -> tuple[float, Tensor]:
    """Best wall time of `repeats` calls, and the last result."""
    best, result, target = float("inf"), None, torch.device(device)
    for _ in range(repeats):
        synchronize(target)
        start = time.perf_counter()
        result = fn()
        synchronize(target)
        best = min(best, time.perf_counter() - start)
    return best, result


def run_size(size: int, args: argparse.Namespace) -> list[dict]:
    """Time every method at one map size; return one row per method."""
    maps, masks = make_inputs(args.maps, size, args.device)
    thresholds = default_thresholds(args.thresholds).to(args.device)
    iou_curve(maps[:2], masks[:2], thresholds)  # warm-up
    ours_t, ours = timed(lambda: iou_curve(maps, masks, thresholds), args.repeats, args.device)
    rows = [dict(size=size, method="one-pass iou_curve (chunked)", seconds=ours_t, identical="ref")]
    unchunked_t, unchunked = timed(
        lambda: iou_curve(maps, masks, thresholds, chunk_size=maps.shape[0]), args.repeats, args.device
    )
    rows.append(dict(size=size, method="one-pass, all maps in one chunk", seconds=unchunked_t,
                     identical=torch.equal(unchunked, ours)))
    baselines = {
        "baseline 1: stack loop over thresholds": stack_loop,
        "baseline 2: map-by-map x threshold loop": map_by_map,
        "baseline 3: torchmetrics binned PR curve": torchmetrics_binned,
    }
    for name, fn in baselines.items():
        seconds, result = timed(lambda fn=fn: fn(maps, masks, thresholds), args.baseline_repeats, args.device)
        rows.append(dict(size=size, method=name, seconds=seconds, identical=torch.equal(result, ours)))
    for row in rows:
        row["vs_ours"] = row["seconds"] / ours_t
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--maps", type=int, default=96)
    parser.add_argument("--thresholds", type=int, default=101)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="best of N for the one-pass sweep")
    parser.add_argument("--baseline-repeats", type=int, default=1, help="best of N for the baselines")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--csv", default=None, help="append one row per (size, method) to this CSV")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"{args.maps} maps, {args.thresholds} thresholds")
    all_rows = []
    for size in args.sizes:
        rows = run_size(size, args)
        all_rows += rows
        print(f"\n{size}x{size}")
        print(f"  {'method':44s} {'seconds':>9s} {'x ours':>8s}  identical")
        for r in rows:
            print(f"  {r['method']:44s} {r['seconds']:9.4f} {r['vs_ours']:8.1f}  {r['identical']}")
        fastest = min((r for r in rows if r["method"].startswith("baseline")), key=lambda r: r["seconds"])
        print(f"  fastest baseline / ours = {fastest['vs_ours']:.1f}x ({fastest['method']})")
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["device", "threads", "maps", "thresholds", *all_rows[0]])
            if new:
                writer.writeheader()
            for r in all_rows:
                writer.writerow(dict(device=args.device, threads=torch.get_num_threads(), maps=args.maps, thresholds=args.thresholds, **r))


if __name__ == "__main__":
    main()
