"""Choosing the validation threshold exactly: one sort against binarizing at every distinct value.

Both give the best validation mIoU over every distinct value of the maps (checked equal). The
baseline is the one-pass ``confusion_curve`` of this project run with every distinct value as a
threshold (in chunks of thresholds, so its memory stays bounded); a plain loop binarizing once per
value would be slower still. The 101-point grid is timed too, for the cost of being approximate,
and the ellipse post-process's search (about 32 labellings) for its cost per entry.

    .venv/bin/python benchmarks/bench_threshold.py --images 24 --defective 6 --size 256
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from defectcam.localization import Part, Protocol, default_thresholds
from defectcam.localization.exact import best_exact_threshold, sort_pixels
from defectcam.localization.iou import confusion_curve
from defectcam.localization.protocol import _ellipse, EntryResult, candidate_thresholds
from defectcam.localization.selection import curves_from_counts


def make_part(n: int, defective: int, size: int, seed: int = 0) -> Part:
    """Smooth CAM-like maps (bilinear from 16x16 noise, min-max per image) and elliptical masks on the first images."""
    g = torch.Generator().manual_seed(seed)
    maps = F.interpolate(torch.rand(n, 1, 16, 16, generator=g), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = maps.flatten(1).amin(1), maps.flatten(1).amax(1)
    maps = (maps - lo[:, None, None]) / (hi - lo)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(defective):
        cy, cx = (torch.rand(2, generator=g) * 0.6 + 0.2) * size
        ry, rx = (torch.rand(2, generator=g) * 0.1 + 0.04) * size
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    labels = masks.flatten(1).any(1)
    return Part(maps, masks, labels, labels.clone())


def brute_force(part: Part, chunk: int) -> tuple[float, float]:
    """Best mIoU over every distinct value, counting each chunk of thresholds in one pass."""
    values = torch.unique(part.maps)
    best, best_t = -1.0, 0.0
    for start in range(0, len(values), chunk):
        thresholds = values[start : start + chunk].double()
        counts = confusion_curve(part.maps, part.masks, thresholds)
        curve = curves_from_counts(*counts, part.defective, thresholds, part.maps[0].numel()).miou
        i = int(curve.argmax())
        if float(curve[i]) > best:
            best, best_t = float(curve[i]), float(thresholds[i])
    return best_t, best


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--defective", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=2048, help="thresholds per pass of the brute force")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    part = make_part(args.images, args.defective, args.size)
    distinct = torch.unique(part.maps).numel()
    exact_s, (exact_t, exact_score) = timed(lambda: best_exact_threshold(sort_pixels(part.maps, part.masks, part.defective)))
    brute_s, (brute_t, brute_score) = timed(brute_force, part, args.chunk)
    grid = default_thresholds(101)
    grid_s, grid_counts = timed(confusion_curve, part.maps, part.masks, grid)
    grid_score = float(curves_from_counts(*grid_counts, part.defective, grid, part.maps[0].numel()).miou.max())
    ellipse_s, _ = timed(_ellipse, EntryResult(), part, part, Protocol(gates=("none",), bootstrap=1),
                         candidate_thresholds(part.maps, 101, (0.5, 0.15)))
    print(f"{args.images} maps of {args.size}x{args.size} ({args.defective} defective), {distinct} distinct values")
    print(f"exact (one sort)                     {exact_s:8.3f} s  best val mIoU {exact_score:.6f} at {exact_t:.6g}")
    print(f"brute force, every distinct value     {brute_s:8.3f} s  best val mIoU {brute_score:.6f} at {brute_t:.6g}")
    print(f"101-point grid (approximate)          {grid_s:8.3f} s  best val mIoU {grid_score:.6f}")
    print(f"ellipse search + test rows (1 gate)   {ellipse_s:8.3f} s")
    print(f"brute force / exact = {brute_s / exact_s:.1f}x; scores equal: {abs(brute_score - exact_score) < 1e-12}; "
          f"grid loses {exact_score - grid_score:.4f}")


if __name__ == "__main__":
    main()
