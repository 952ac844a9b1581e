"""Probability maps of a full-resolution network, with test-time augmentation, and their scoring maps.

The decoder's maps are softmax probabilities, never min-max normalized: a defect-free image can come
out empty. TTA averages the probabilities over flips/quarter turns, each mapped back (an exact average
over a group, hence equivariant; see cams/tta.py for the transforms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectcam.cams.tta import tta_transforms


def defect_probabilities(network: nn.Module, images: Tensor, tta: str = "none") -> tuple[Tensor, Tensor]:
    """images (N, 3, H, W) -> (classifier logits (N, 2) of the untransformed images, defect probabilities
    (N, H, W) averaged over the `tta` set, each mapped back). `network` returns (logits, decoder logits)."""
    transforms = tta_transforms(tta)
    logits, seg = network(images)
    total = seg.float().softmax(1)[:, 1]
    for transform in transforms[1:]:
        _, seg = network(transform.apply(images))
        total = total + transform.invert(seg.float().softmax(1)[:, 1])
    return logits.float(), total / len(transforms)


def probability_scoring_maps(probs: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) probabilities -> float32 (N, H, W) in [0, 1] at the masks' size (bilinear, no min-max)."""
    probs = probs.float()
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    return probs.clamp_(0.0, 1.0)


@torch.no_grad()
def batched_probabilities(network: nn.Module, images: Tensor, batch_size: int, tta: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """defect_probabilities over a (N, 3, H, W) CPU tensor in batches -> CPU (logits (N, 2), probs (N, H, W))."""
    logits, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        batch_logits, batch_probs = defect_probabilities(network, images[start : start + batch_size].to(device), tta)
        logits.append(batch_logits.cpu())
        probs.append(batch_probs.cpu())
    return torch.cat(logits), torch.cat(probs)
