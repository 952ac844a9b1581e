"""No precision lost in the CAM cache: maps of any magnitude give the scoring maps they give from memory."""

from __future__ import annotations

import pytest
import torch

from defectcam.cams.normalize import scoring_maps
from defectcam.cams.storage import decode_maps, encode_maps


def raw_maps() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    raw = torch.relu(torch.randn(6, 16, 16, generator=g))
    raw[1] = 0.0  # an all-zero map stays zero
    raw[2] = 3.0  # a flat map scores zero too
    raw[3] += 5.0  # a map whose range is small against its values
    return raw


@pytest.mark.parametrize("magnitude", [1e-8, 1e-6, 1e-3, 1.0, 1e3])
def test_cached_maps_score_like_maps_in_memory(magnitude: float) -> None:
    raw = raw_maps() * magnitude
    in_memory = scoring_maps(raw, (64, 64))
    from_cache = scoring_maps(decode_maps(encode_maps(raw)), (64, 64))
    assert (in_memory - from_cache).abs().max().item() <= 1e-3
    assert from_cache[1].abs().max().item() == 0.0 and from_cache[2].abs().max().item() == 0.0
    stored = encode_maps(raw)
    assert stored["codes"].dtype == torch.float16 and stored["low"].dtype == torch.float32


def test_plain_float16_would_lose_tiny_maps() -> None:
    """The failure the codes prevent: float16 flushes 1e-8 maps to zero."""
    raw = raw_maps() * 1e-8
    assert (scoring_maps(raw, (64, 64)) - scoring_maps(raw.half(), (64, 64))).abs().max().item() > 0.5


@pytest.mark.parametrize("magnitude", [1e-8, 1e3])
def test_normalization_eps_is_relative_to_the_map(magnitude: float) -> None:
    raw = raw_maps()
    assert torch.allclose(scoring_maps(raw * magnitude, (32, 32)), scoring_maps(raw, (32, 32)), atol=1e-5)
    assert scoring_maps(raw * magnitude, (32, 32))[0].max().item() == pytest.approx(1.0, abs=1e-5)
