"""Training targets of the full-resolution decoder: Otsu against scikit-image, seed regions, seeds, negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from defectcam.fullres.seeds import IGNORE, otsu_thresholds, sample_seeds, seed_regions, training_targets

pytestmark = pytest.mark.usefixtures("one_thread")


def blob_cams(n: int = 6, size: int = 48, seed: int = 0) -> torch.Tensor:
    """[0, 1] maps with one bright Gaussian blob each over weak noise, like a CAM of a defective image."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps = []
    for _ in range(n):
        cy, cx = torch.randint(8, size - 8, (2,), generator=generator).tolist()
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0**2))
        noisy = blob + 0.1 * torch.rand(size, size, generator=generator)
        maps.append((noisy - noisy.min()) / (noisy.max() - noisy.min()))
    return torch.stack(maps)


def test_otsu_equals_scikit_image() -> None:
    maps = torch.cat([blob_cams(), torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(1)) ** 3])
    ours = otsu_thresholds(maps.double())
    for i, image in enumerate(maps.double().numpy()):
        reference = threshold_otsu(image)
        # The same histogram (256 bins over the image's range) and rule; only bin edges may round differently.
        assert float(ours[i]) == pytest.approx(reference, abs=(image.max() - image.min()) / 256 + 1e-12)
        assert abs(float((image > float(ours[i])).mean()) - float((image > reference).mean())) < 0.01


def test_a_flat_map_has_no_foreground() -> None:
    maps = torch.zeros(2, 16, 16)
    maps[1] = 0.5
    foreground, background = seed_regions(maps)
    assert not foreground.any()
    assert background.all()  # everything is at or below its own quantile


def test_regions_follow_their_rules() -> None:
    cams = blob_cams()
    foreground, background = seed_regions(cams, erode_radius=2, background_quantile=0.3)
    high = cams > otsu_thresholds(cams)[:, None, None]
    assert foreground.any(dim=(1, 2)).all() and background.any(dim=(1, 2)).all()
    assert not (foreground & background).any()
    assert (foreground <= high).all()  # inside the Otsu region...
    assert foreground.sum() < high.sum()  # ...and eroded
    cut = torch.quantile(cams.flatten(1), 0.3, dim=1, interpolation="higher")
    assert (cams[background] <= cut.repeat_interleave(background.flatten(1).sum(1))).all()


def test_erosion_never_empties_a_small_region() -> None:
    cams = torch.zeros(1, 32, 32)
    cams[0, 10:12, 10:12] = 1.0  # a 2x2 region: a 5x5 erosion would remove it
    foreground, _ = seed_regions(cams, erode_radius=2)
    assert foreground.sum() == 4


def test_seeds_fall_only_inside_their_region() -> None:
    cams = blob_cams(n=8)
    foreground, background = seed_regions(cams)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        fg = sample_seeds(foreground, 4, 5, generator)
        bg = sample_seeds(background, 8, 5, generator)
        assert (fg <= foreground).all() and (bg <= background).all()
        assert fg.any(dim=(1, 2)).all() and bg.any(dim=(1, 2)).all()
        assert (bg.flatten(1).sum(1) <= 8 * 25).all()


def test_seeds_are_drawn_afresh_and_repeat_with_the_seed() -> None:
    cams = blob_cams(n=4)
    foreground, _ = seed_regions(cams)
    first = sample_seeds(foreground, 3, 1, torch.Generator().manual_seed(5))
    again = sample_seeds(foreground, 3, 1, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    sample_seeds(foreground, 3, 1, generator)
    later = sample_seeds(foreground, 3, 1, generator)
    assert torch.equal(first, again)
    assert not torch.equal(first, later)


def test_an_empty_region_gives_no_seed() -> None:
    region = torch.zeros(2, 16, 16, dtype=torch.bool)
    region[1, 4, 4] = True
    seeds = sample_seeds(region, 5, 3)
    assert not seeds[0].any() and seeds[1].sum() == 1


def test_targets_of_defective_and_defect_free_images() -> None:
    cams = blob_cams(n=4)
    foreground, background = seed_regions(cams)
    defective = torch.tensor([True, False, True, False])
    target = training_targets(defective, foreground, background, 4, 8, 3, torch.Generator().manual_seed(0))
    for i in (0, 2):
        labelled = target[i] != IGNORE
        assert labelled.any() and (labelled.float().mean() < 0.5)  # seeds only
        assert ((target[i] == 1) <= foreground[i]).all() and ((target[i] == 0) <= background[i]).all()
    for i in (1, 3):  # a defect-free image: zero seeds, every pixel background
        assert (target[i] == 0).all()
    without = training_targets(defective, foreground, background, 4, 8, 3, torch.Generator().manual_seed(0), negatives=False)
    assert (without[1] == IGNORE).all() and torch.equal(without[0], target[0])


def test_regions_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="background_quantile"):
        seed_regions(torch.rand(1, 8, 8), background_quantile=1.0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        seed_regions(torch.rand(8, 8))
    assert np.isfinite(otsu_thresholds(torch.rand(2, 8, 8)).numpy()).all()


def test_crops_of_defective_images_hold_foreground() -> None:
    import torchvision

    from defectcam.fullres.network import FullResolutionNet
    from defectcam.models.decoder_module import DecoderTraining
    from defectcam.models.decoder_recipe import DecoderRecipe

    network = FullResolutionNet(torchvision.models.resnet18(num_classes=2), (8, 8, 8, 8, 8))
    training = DecoderTraining(network, DecoderRecipe(crop=32, seed=3), (0.5, 0.25), torch.zeros(0, 64, 64, dtype=torch.uint8),
                               lambda probs: 0.0)
    regions = torch.zeros(6, 2, 64, 64)
    for i in range(6):
        regions[i, 0, 50 + i, 5 + 9 * i] = 1.0  # one foreground pixel each, near the border
    gray = torch.arange(6 * 64 * 64, dtype=torch.float32).view(6, 64, 64)
    defective = torch.tensor([True, True, True, False, False, False])
    for _ in range(10):
        cropped, cropped_regions = training._crop(gray, regions, defective, 32)
        assert cropped.shape == (6, 32, 32) and cropped_regions.shape == (6, 2, 32, 32)
        assert (cropped_regions[:3, 0].flatten(1).sum(1) == 1).all()  # the defective images keep their foreground pixel
        # every window is a window of its own image, pixels in place
        for i in range(6):
            top, left = divmod(int(cropped[i, 0, 0]) - i * 64 * 64, 64)
            assert torch.equal(cropped[i], gray[i, top : top + 32, left : left + 32])
