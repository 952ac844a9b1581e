"""Losses of the full-resolution decoder: partial cross-entropy on seeds, an edge-aware pairwise term, a size term.

All take the decoder's (N, 2, H, W) logits or its (N, H, W) defect probabilities and return a scalar
(or per-image values). Plain PyTorch: no compiled CRF extension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from defectcam.fullres.seeds import IGNORE


def partial_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """(N, 2, H, W) logits, (N, H, W) target in {IGNORE, 0, 1} -> (N,) mean cross-entropy over each image's
    labelled pixels (0 for an image without any)."""
    labelled = target != IGNORE
    per_pixel = F.cross_entropy(logits.float(), target.clamp_min(0), reduction="none") * labelled
    return per_pixel.flatten(1).sum(1) / labelled.flatten(1).sum(1).clamp_min(1)


def _offsets(radius: int) -> list[tuple[int, int]]:
    """Half of the (dy, dx) offsets of a (2r+1)^2 window, one of each opposite pair, without (0, 0)."""
    return [(dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1) if dy > 0 or dx > 0]


def pairwise_potts_loss(probs: Tensor, image: Tensor, radius: int = 2, sigma_xy: float = 2.0,
                        sigma_intensity: float = 0.1) -> Tensor:
    """Edge-aware pairwise (dense-CRF-style) loss: the relaxed Potts energy over neighbour pairs in a window.

    probs (N, H, W) defect probabilities, image (N, H, W) intensities (e.g. gray in [0, 1]). For pixels i, j
    at offset d within `radius`: w_ij = exp(-|d|^2 / (2 sigma_xy^2) - (I_i - I_j)^2 / (2 sigma_intensity^2)),
    and the pair costs w_ij * (p_i (1 - p_j) + p_j (1 - p_i)), the probability that i and j take different
    labels. The mean over pairs is returned: disagreeing across similar pixels costs most, across an edge little
    (Krähenbühl and Koltun 2011; as a loss, Tang et al., ECCV 2018).
    """
    if probs.shape != image.shape or probs.ndim != 3:
        raise ValueError(f"probs and image must both be (N, H, W), got {tuple(probs.shape)} and {tuple(image.shape)}")
    height, width = probs.shape[1:]
    total = probs.new_zeros(())
    pairs = 0
    for dy, dx in _offsets(radius):
        if dy >= height or abs(dx) >= width:
            continue
        rows_a, rows_b = slice(0, height - dy), slice(dy, height)
        cols_a, cols_b = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
        p_a, p_b = probs[:, rows_a, cols_a], probs[:, rows_b, cols_b]
        contrast = (image[:, rows_a, cols_a] - image[:, rows_b, cols_b]) ** 2
        weight = torch.exp(-(dy * dy + dx * dx) / (2 * sigma_xy**2) - contrast / (2 * sigma_intensity**2))
        total = total + (weight * (p_a + p_b - 2 * p_a * p_b)).sum()
        pairs += p_a.numel()
    return total / max(pairs, 1)


def size_penalty(probs: Tensor, low: float, high: float) -> Tensor:
    """(N, H, W) defect probabilities -> (N,) relative squared hinge on each image's predicted area fraction a
    outside [low, high]: (1 - a / low)^2 below, (a / high - 1)^2 above, 0 inside (low > 0).

    For defective images: a defect is neither nothing nor most of the image (DAGM's ellipses cover 0.4-8 %).
    Relative, so that predicting nothing costs 1 whatever `low` is, like a seed's cross-entropy."""
    area = probs.flatten(1).mean(1)
    return F.relu(1.0 - area / low) ** 2 + F.relu(area / high - 1.0) ** 2
