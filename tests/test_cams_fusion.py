"""Fusion of normalized layer maps: shapes, [0, 1], LayerCAM max rule, product/geometric scale, zeros."""



import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from defectcam.cams import fuse_layercam, fuse_multiplicative, scoring_maps
from defectcam.errors import ConfigError

SIZE = (32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def layer_maps() -> list[Tensor]:
    """Normalized maps of 4 layers at 32, 16, 8, 4 px (batch 3), like ResNet layer1..layer4."""
    torch.manual_seed(0)
    return [scoring_maps(torch.rand(3, side, side), (side, side)) for side in (32, 16, 8, 4)]


def up(maps: Tensor) -> Tensor:
    """(N, h, w) -> (N, 32, 32) bilinear, align_corners=False."""
    return F.interpolate(maps.float()[:, None], size=SIZE, mode="bilinear", align_corners=False)[:, 0]


def assert_unit_range(fused: Tensor) -> None:
    assert fused.shape == (3, *SIZE) and fused.dtype == torch.float32
    assert torch.isfinite(fused).all()
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
    assert torch.allclose(fused.flatten(1).amax(1), torch.ones(3), atol=1e-5)
    assert torch.allclose(fused.flatten(1).amin(1), torch.zeros(3))


def test_shapes_and_ranges(layer_maps: list[Tensor]) -> None:
    assert_unit_range(fuse_layercam(layer_maps, SIZE))
    assert_unit_range(fuse_multiplicative(layer_maps, SIZE))
    assert_unit_range(fuse_multiplicative(layer_maps, SIZE, mode="geometric"))
    assert fuse_layercam(layer_maps[2:], (20, 24)).shape == (3, 20, 24)


def test_layercam_max_dominates_every_tanh_scaled_input(layer_maps: list[Tensor]) -> None:
    raw = fuse_layercam(layer_maps, SIZE, gamma=2.0, renormalize=False)
    scaled = [up(torch.tanh(2.0 * m)) for m in layer_maps]
    for s in scaled:
        assert (raw >= s - 1e-6).all()
    torch.testing.assert_close(raw, torch.stack(scaled).amax(0))
    fused = fuse_layercam(layer_maps, SIZE)
    low, high = raw.flatten(1).amin(1)[:, None, None], raw.flatten(1).amax(1)[:, None, None]
    torch.testing.assert_close(fused, (raw - low) / (high - low + 1e-7))


def test_layercam_scaling_divides_by_the_map_maximum(layer_maps: list[Tensor]) -> None:
    # Eq. 9 uses M / max(M): an unnormalized map fuses like its normalized version.
    scaled_inputs = [m * 7.5 for m in layer_maps]
    torch.testing.assert_close(fuse_layercam(scaled_inputs, SIZE), fuse_layercam(layer_maps, SIZE))


def test_geometric_mean_keeps_the_input_scale(layer_maps: list[Tensor]) -> None:
    same = [layer_maps[0]] * 3
    geometric_same = fuse_multiplicative(same, SIZE, mode="geometric", renormalize=False)
    torch.testing.assert_close(geometric_same, layer_maps[0])
    torch.testing.assert_close(fuse_multiplicative(same, SIZE, renormalize=False), layer_maps[0] ** 3)
    product = fuse_multiplicative(layer_maps, SIZE, renormalize=False)
    geometric = fuse_multiplicative(layer_maps, SIZE, mode="geometric", renormalize=False)
    torch.testing.assert_close(geometric, product ** 0.25)
    assert (geometric >= product - 1e-7).all() and float(geometric.max()) <= 1.0


def test_product_is_the_elementwise_product(layer_maps: list[Tensor]) -> None:
    raw = fuse_multiplicative(layer_maps, SIZE, renormalize=False)
    torch.testing.assert_close(raw, torch.stack([up(m) for m in layer_maps]).prod(0))


@pytest.mark.parametrize("fuse", ["layercam", "product", "geometric"])
def test_zeros_stay_zeros(fuse: str) -> None:
    zeros = [torch.zeros(3, 16, 16), torch.zeros(3, 4, 4)]
    fused = fuse_layercam(zeros, SIZE) if fuse == "layercam" else fuse_multiplicative(zeros, SIZE, mode=fuse)
    assert fused.shape == (3, *SIZE) and torch.isfinite(fused).all() and not fused.any()


def test_one_image_zero_in_one_layer_zeroes_its_product(layer_maps: list[Tensor]) -> None:
    layer_maps[1][0] = 0.0
    fused = fuse_multiplicative(layer_maps, SIZE)
    assert not fused[0].any() and fused[1:].flatten(1).amax(1).gt(0.99).all()


def test_inputs_are_not_modified_and_half_precision_is_accepted(layer_maps: list[Tensor]) -> None:
    copies = [m.clone() for m in layer_maps]
    fuse_multiplicative(layer_maps, SIZE)
    fuse_layercam(layer_maps, SIZE)
    assert all(torch.equal(m, c) for m, c in zip(layer_maps, copies))
    half = fuse_multiplicative([m.half() for m in layer_maps], SIZE, mode="geometric")
    assert half.dtype == torch.float32
    full = fuse_multiplicative(layer_maps, SIZE, mode="geometric")
    torch.testing.assert_close(half, full, atol=2e-2, rtol=0)


def test_bad_inputs(layer_maps: list[Tensor]) -> None:
    with pytest.raises(ConfigError, match="product, geometric"):
        fuse_multiplicative(layer_maps, SIZE, mode="sum")
    with pytest.raises(ValueError, match="non-empty"):
        fuse_layercam([], SIZE)
    with pytest.raises(ValueError, match="batch size"):
        fuse_layercam([layer_maps[0], layer_maps[1][:2]], SIZE)
    with pytest.raises(ValueError, match=r"maps\[1\]"):
        fuse_multiplicative([layer_maps[0], torch.rand(3, 1, 8, 8)], SIZE)
    with pytest.raises(ConfigError, match="output size"):
        fuse_layercam(layer_maps, (0, 32))
