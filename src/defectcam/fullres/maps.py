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
    (N, H, W) averaged over the `tta` set, each mapped back). `network` is a FullResolutionNet."""
    logits, seg = network(images)
    return logits.float(), transform_average(network, images, tta, seg)


def defect_map(network: nn.Module, images: Tensor, tta: str = "none") -> Tensor:
    """images (N, 3, H, W) -> defect probabilities (N, H, W) as defect_probabilities makes them, without the
    classifier's logits: the backbone runs only up to the decoder's deepest layer."""
    return transform_average(network, images, tta, network.decoder_logits(images))


def transform_average(network: nn.Module, images: Tensor, tta: str, identity_logits: Tensor) -> Tensor:
    """The defect probability averaged over the `tta` set, given the untransformed images' decoder logits (the
    identity comes first in every set); the other transforms need no classifier logits."""
    transforms = tta_transforms(tta)
    total = identity_logits.float().softmax(1)[:, 1]
    for transform in transforms[1:]:
        seg = network.decoder_logits(transform.apply(images))
        total = total + transform.invert(seg.float().softmax(1)[:, 1])
    return total / len(transforms)


def stored_probabilities(probs: Tensor) -> Tensor:
    """Probabilities at the precision the fullres cache keeps them (float16: half of float32's bytes), which is what
    localize scored: whoever applies its thresholds to fresh maps rounds them here first."""
    return probs.half()


def probability_scoring_maps(probs: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) probabilities -> float32 (N, H, W) in [0, 1] at the masks' size (bilinear, no min-max)."""
    probs = probs.float()
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    return probs.clamp_(0.0, 1.0)


@torch.no_grad()
def batched_maps(network: nn.Module, images: Tensor, batch_size: int, tta: str, device: torch.device) -> Tensor:
    """defect_map over a (N, 3, H, W) CPU tensor in batches -> CPU probabilities (N, H, W)."""
    probs = [defect_map(network, images[start : start + batch_size].to(device), tta).cpu()
             for start in range(0, images.shape[0], batch_size)]
    return torch.cat(probs)
