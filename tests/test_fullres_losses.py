"""The decoder's losses: partial cross-entropy on labelled pixels, the pairwise term's gradient, the size term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from defectcam.fullres.losses import pairwise_potts_loss, partial_cross_entropy, size_penalty
from defectcam.fullres.seeds import IGNORE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_partial_cross_entropy_reads_labelled_pixels_only() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, generator=generator)
    target = torch.full((3, 8, 8), IGNORE)
    target[0, :2, :2] = 1
    target[0, 5:, 5:] = 0
    target[1] = 0
    per_image = partial_cross_entropy(logits, target)
    expected0 = F.cross_entropy(logits[0:1].permute(0, 2, 3, 1)[target[0:1] >= 0], target[0][target[0] >= 0])
    assert per_image[0] == pytest.approx(float(expected0), rel=1e-6)
    assert per_image[1] == pytest.approx(float(F.cross_entropy(logits[1:2], target[1:2])), rel=1e-6)
    assert per_image[2] == 0.0  # nothing labelled
    changed = logits.clone()
    changed[0, :, 3, 3] += 10.0  # an unlabelled pixel of image 0
    assert torch.equal(partial_cross_entropy(changed, target), per_image)


def test_pairwise_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 7, 6, dtype=torch.float64, generator=generator).requires_grad_(True)
    image = torch.rand(2, 7, 6, dtype=torch.float64, generator=generator)
    assert torch.autograd.gradcheck(lambda p: pairwise_potts_loss(p, image, radius=2, sigma_xy=1.5, sigma_intensity=0.2), (probs,))


def test_pairwise_costs_disagreement_across_similar_pixels_more_than_across_an_edge() -> None:
    image = torch.zeros(1, 16, 16)
    image[:, :, 8:] = 1.0  # an intensity edge between columns 7 and 8
    on_edge = torch.zeros(1, 16, 16)
    on_edge[:, :, 8:] = 1.0  # the label changes where the image does
    off_edge = torch.zeros(1, 16, 16)
    off_edge[:, :, 4:] = 1.0  # the label changes inside a flat area
    assert pairwise_potts_loss(on_edge, image) < 0.01 * pairwise_potts_loss(off_edge, image)
    assert pairwise_potts_loss(torch.full((1, 16, 16), 1.0), image) == 0.0  # agreeing labels cost nothing


def test_size_penalty_is_zero_inside_the_band() -> None:
    probs = torch.zeros(3, 10, 10)
    probs[1, :2] = 1.0  # 20 %
    probs[2] = 1.0  # 100 %
    penalty = size_penalty(probs, low=0.05, high=0.5)
    assert penalty[0] == pytest.approx(1.0) and penalty[1] == 0.0 and penalty[2] == pytest.approx(1.0)
    half = torch.zeros(1, 10, 10)
    half[0, 0, :1] = 1.0  # 1 % = half of low
    assert size_penalty(half, low=0.02, high=0.5)[0] == pytest.approx(0.25)
