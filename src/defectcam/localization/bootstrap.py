"""Percentile bootstrap intervals of means over images (the uncertainty of a test score)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

LEVEL = 0.95


def bootstrap_means(values: Tensor, resamples: int = 1000, seed: int = 0, strata: Tensor | None = None) -> Tensor:
    """(n,) per-image scores -> (resamples,) float64 means of seeded resamples with replacement.

    With ``strata`` (n,) int labels (e.g. the problem of each image), images are resampled within
    each stratum and the statistic is the mean of the per-stratum means, so every stratum keeps its
    weight (a mean over problems stays a mean over problems).
    """
    values = values.detach().reshape(-1).to("cpu", torch.float64).numpy()
    generator = np.random.default_rng(int(seed))
    labels = np.zeros(len(values), dtype=np.int64) if strata is None else torch.as_tensor(strata).reshape(-1).cpu().numpy()
    groups = [np.flatnonzero(labels == s) for s in np.unique(labels)]
    means = np.zeros(resamples, dtype=np.float64)
    for members in groups:
        picks = generator.integers(0, len(members), size=(resamples, len(members)))
        means += values[members][picks].mean(1)
    return torch.from_numpy(means / max(len(groups), 1))


def bootstrap_interval(
    values: Tensor, resamples: int = 1000, seed: int = 0, level: float = LEVEL, strata: Tensor | None = None
) -> tuple[float, float]:
    """(n,) per-image scores -> (low, high) percentile interval of their mean; (NaN, NaN) for n = 0."""
    if values.numel() == 0 or resamples < 1:
        return math.nan, math.nan
    means = bootstrap_means(values, resamples, seed, strata)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return low, high
