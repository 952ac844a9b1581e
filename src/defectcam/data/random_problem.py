"""A problem of random images held in memory: the training path's shape without a dataset (benchmarks, tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defectcam.data.prepare import ProblemData


def random_problem(parts: dict[str, int], size: int, defect_every: int = 8, problem: int = 1, seed: int = 0,
                   mask_size: int = 1) -> ProblemData:
    """Random uint8 images of `size` x `size`, `parts[name]` of them in each part (in that order).

    Every `defect_every`-th image is defective (8: about DAGM's share); masks are all False at
    `mask_size` (training never reads them; the default keeps a large benchmark's memory to its images).
    """
    n = sum(parts.values())
    labels = (np.arange(n) % defect_every == 0).astype(np.int64)
    table = pd.DataFrame({
        "image_id": [f"{problem}_{i:04d}" for i in range(n)], "problem": problem,
        "part": np.repeat(list(parts), list(parts.values())), "label": labels,
        "mask_row": np.where(labels == 1, np.cumsum(labels) - 1, -1),
    })
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)
    return ProblemData(problem, table, images, np.zeros((int(labels.sum()), mask_size, mask_size), dtype=bool))
