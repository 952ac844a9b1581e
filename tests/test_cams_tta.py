"""Test-time augmentation of CAMs (cam.tta): maps come back in place, the average is equivariant, none changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cam_models import calibrated_resnet
from defectcam.cams import extract_cams, tta_cams
from defectcam.cams.tta import TTA_SETS, Dihedral, tta_transforms


class ImageEvidence(nn.Module):
    """A 1x1 conv (the hooked 'features') then global average pooling and a linear head: its Grad-CAM on
    'features' is relu(image / (H * W)), the input pattern itself up to scale, so a map that is not mapped back
    shows up moved."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 1, 1, bias=False)
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def l_pattern(size: int = 12) -> torch.Tensor:
    """An L in one corner: no flip or turn maps it onto itself."""
    image = torch.zeros(1, 1, size, size)
    image[0, 0, 1:8, 2] = 1.0
    image[0, 0, 7, 2:6] = 1.0
    return image


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_an_asymmetric_pattern_comes_back_in_place(tta: str) -> None:
    image = l_pattern()
    maps = tta_cams(ImageEvidence(), image, "features", "gradcam", tta=tta).maps["gradcam"]["features"]
    plain = extract_cams(ImageEvidence(), image, "features", "gradcam").maps["gradcam"]["features"]
    scale = 1.0 / image[0, 0].numel()
    assert torch.allclose(plain, image[:, 0] * scale)  # the oracle: this model's Grad-CAM is the pattern itself
    assert torch.allclose(maps, image[:, 0] * scale, atol=1e-9)


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_the_average_is_equivariant_for_a_real_network(tta: str) -> None:
    model = calibrated_resnet("resnet18", size=64)
    images = torch.randn(2, 3, 64, 64)
    layers, methods = ["layer2", "layer3"], ["gradcam", "layercam"]
    reference = tta_cams(model, images, layers, methods, tta=tta).maps
    for transform in TTA_SETS[tta]:
        moved = tta_cams(model, transform.apply(images), layers, methods, tta=tta).maps
        for method in methods:
            for layer in layers:
                expected = transform.apply(reference[method][layer])
                assert torch.allclose(moved[method][layer], expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max())), (transform, method, layer)


def test_without_tta_a_network_is_not_equivariant_so_the_test_above_can_fail() -> None:
    model = calibrated_resnet("resnet18", size=64)
    images = torch.randn(1, 3, 64, 64)
    turn = Dihedral(1)
    plain = extract_cams(model, images, "layer3", "gradcam").maps["gradcam"]["layer3"]
    moved = extract_cams(model, turn.apply(images), "layer3", "gradcam").maps["gradcam"]["layer3"]
    assert not torch.allclose(moved, turn.apply(plain), rtol=1e-4, atol=1e-5 * float(plain.abs().max()))


def test_none_is_the_plain_pass_and_logits_stay_the_untransformed_images() -> None:
    model = calibrated_resnet("resnet18", size=64)
    images = torch.randn(2, 3, 64, 64)
    plain = extract_cams(model, images, "layer4", "gradcampp")
    none = tta_cams(model, images, "layer4", "gradcampp", tta="none")
    assert torch.equal(none.maps["gradcampp"]["layer4"], plain.maps["gradcampp"]["layer4"])
    assert torch.equal(tta_cams(model, images, "layer4", "gradcampp", tta="dihedral").logits, plain.logits)


def test_every_transform_is_undone_by_its_inverse_and_the_sets_are_groups() -> None:
    x = torch.arange(12.0).reshape(1, 3, 4)
    for name, transforms in TTA_SETS.items():
        images = {tuple(t.apply(torch.arange(16.0).reshape(4, 4)).flatten().tolist()) for t in transforms}
        assert len(images) == len(transforms), name  # distinct transforms
        for a in transforms:
            assert torch.equal(a.invert(a.apply(x)), x)
            for b in transforms:  # closed under composition: the average is then exactly equivariant
                composed = tuple(a.apply(b.apply(torch.arange(16.0).reshape(4, 4))).flatten().tolist())
                assert composed in images, (name, a, b)


def test_an_unknown_set_is_refused() -> None:
    with pytest.raises(ValueError, match="cam.tta must be one of none, flips, dihedral"):
        tta_transforms("rot45")


def test_a_cache_of_another_tta_is_stale_both_ways_and_says_so_in_the_users_words() -> None:
    """cam_meta leaves tta out for none: a flipped cache once passed as fresh for tta=none (only wanted keys compared)."""
    from defectcam.stages.cams import stale_reason

    plain, flipped = {"format": 3}, {"format": 3, "tta": "flips"}
    assert stale_reason(plain, flipped) == "tta was 'none', now 'flips'"
    assert stale_reason(flipped, plain) == "tta was 'flips', now 'none'"
    assert stale_reason(flipped, dict(flipped)) is None and stale_reason(plain, dict(plain)) is None
