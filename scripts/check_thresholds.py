"""Check the exact threshold choice on a finished run's validation maps against brute force.

    .venv/bin/python scripts/check_thresholds.py OUTPUT_DIR [--problem 1] [--method layercam] [--layers layer1 layer2]

For each named entry (no gate, no post-process, select_on=miou), prints the threshold chosen exactly
(localization/exact.py), the best validation mIoU over *every* distinct value of the validation maps
found by binarizing at each of them (this project's one-pass counting, in chunks of thresholds), and
what the 101-point grid would have chosen. mIoU involves only the defective images, so only their maps
are binarized. Reads the run's CAM cache and masks; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from defectcam.cams import scoring_maps
from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.localization import default_thresholds
from defectcam.localization.entries import masks_tensor
from defectcam.localization.exact import best_exact_threshold, sort_pixels
from defectcam.localization.iou import confusion_curve
from defectcam.localization.selection import curves_from_counts
from defectcam.stages.cams import load_cam_cache


def brute_force(maps: torch.Tensor, masks: torch.Tensor, chunk: int = 4096) -> tuple[float, float, int]:
    """(threshold, mIoU, number of distinct values) of the best binarization at every distinct value."""
    values = torch.unique(maps)
    labels = torch.ones(maps.shape[0], dtype=torch.bool)
    best, best_t = -1.0, 0.0
    for start in range(0, len(values), chunk):
        thresholds = values[start : start + chunk].double()
        counts = confusion_curve(maps, masks, thresholds)
        curve = curves_from_counts(*counts, labels, thresholds, maps[0].numel()).miou
        i = int(curve.argmax())
        if float(curve[i]) > best:
            best, best_t = float(curve[i]), float(thresholds[i])
    return best_t, best, len(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--problem", type=int, default=1)
    parser.add_argument("--method", default="layercam")
    parser.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "layer4"])
    args = parser.parse_args()
    folder = problem_dir(args.output_dir, args.problem)
    cache = load_cam_cache(folder)
    table = pd.read_csv(folder / "split.csv", keep_default_na=False, na_values={"mask_path": [""]})
    masks = np.load(next((folder / "cache").glob("masks_*.npy")), mmap_mode="r")  # native size, whatever the image size
    data = ProblemData(args.problem, table, np.empty((0, 0, 0), np.uint8), masks)
    rows = cache["val"]["rows"].numpy()
    picks = [i for i, row in enumerate(rows) if table["label"].iat[int(row)] == 1]  # mIoU sees defective images only
    truth = masks_tensor([data.mask_of(int(rows[i])) for i in picks])
    labels = torch.ones(len(picks), dtype=torch.bool)
    grid = default_thresholds(101)
    print(f"{args.output_dir} problem {args.problem}: {len(picks)} defective validation images at {tuple(truth.shape[1:])}")
    for layer in args.layers:
        maps = scoring_maps(cache["val"]["maps"][args.method][layer][picks], tuple(truth.shape[1:]))
        start = time.perf_counter()
        exact_t, exact = best_exact_threshold(sort_pixels(maps, truth, labels))
        exact_s = time.perf_counter() - start
        start = time.perf_counter()
        brute_t, brute, distinct = brute_force(maps, truth)
        brute_s = time.perf_counter() - start
        grid_curve = curves_from_counts(*confusion_curve(maps, truth, grid), labels, grid, maps[0].numel()).miou
        g = int(grid_curve.argmax())
        print(f"{args.method} {layer}: exact {exact:.6f} at {exact_t:.6g} ({exact_s:.2f} s) | brute force over {distinct} "
              f"values {brute:.6f} at {brute_t:.6g} ({brute_s:.1f} s) | gap {brute - exact:.2e} | 101-grid {float(grid_curve[g]):.6f} "
              f"at {float(grid[g]):.2f} (loses {exact - float(grid_curve[g]):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
