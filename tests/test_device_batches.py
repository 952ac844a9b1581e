"""Train/val batches assembled on the training device (data.device_cache), checked on the CPU against the host path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from defectcam.data.datamodule import DefectDataModule, train_augmentation
from defectcam.data.device_batches import DeviceImages, brightness_contrast, use_device_cache
from defectcam.data.prepare import ProblemData
from defectcam.data.random_problem import random_problem
from defectcam.errors import ConfigError
from defectcam.models.backbone import build_backbone
from defectcam.models.checkpoint_io import use_async_checkpoints
from defectcam.models.module import DefectClassifier


def small_problem(size: int = 16) -> ProblemData:
    """24 random images (16 train, 8 val), every third defective."""
    return random_problem({"train": 16, "val": 8}, size, defect_every=3)


def test_unaugmented_device_batch_equals_the_host_batch() -> None:
    data = small_problem()
    host = DefectDataModule(data, 0.4, 0.2, batch_size=8)
    batch = next(iter(host.loader("val")))
    device = DeviceImages(data, 0.4, 0.2, augment=["flips", "rot90", "jitter"])
    assert torch.equal(device.batch(batch["row"], train=False), batch["image"])  # validation: never augmented


def test_flips_and_turns_move_pixels_never_change_them() -> None:
    data = small_problem()
    device = DeviceImages(data, 0.0, 1.0, augment=["flips", "rot90"])
    rows = torch.arange(16).repeat(8)
    torch.manual_seed(0)
    images = device.batch(rows, train=True)[:, 0]
    plain = device.batch(rows, train=False)[:, 0]
    seen = set()
    for image, original in zip(images, plain):
        variants = [torch.rot90(f, k, (0, 1)) for f in (original, original.flip(1)) for k in range(4)]
        index = next(i for i, v in enumerate(variants) if torch.equal(image, v))  # StopIteration: pixels changed
        seen.add(index)
    assert len(seen) == 8  # every flip/turn drawn over 128 samples


@pytest.mark.parametrize(("contrast", "brightness"), [(-0.1, -0.1), (-0.05, 0.07), (0.0, 0.0), (0.08, -0.09), (0.1, 0.1), (0.033, 0.021)])
def test_jitter_equals_albumentations_on_every_grey_level(contrast: float, brightness: float) -> None:
    import albumentations as A

    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    host = A.RandomBrightnessContrast(brightness_limit=(brightness, brightness), contrast_limit=(contrast, contrast), p=1.0)
    expected = host(image=levels)["image"].astype(np.float32)
    device = brightness_contrast(torch.from_numpy(levels).float()[None], torch.tensor([contrast]), torch.tensor([brightness]))
    assert np.array_equal(device[0].numpy(), expected)


def test_jitter_is_a_bounded_affine_change_of_each_image() -> None:
    data = small_problem()
    device = DeviceImages(data, 0.0, 1.0, augment=["jitter"], jitter_limit=0.1)
    rows = torch.arange(16).repeat(4)
    torch.manual_seed(1)
    jittered = device.batch(rows, train=True)[:, 0] * 255.0
    plain = device.batch(rows, train=False)[:, 0] * 255.0
    changed = 0
    for image, original in zip(jittered, plain):
        inside = (image > 0) & (image < 255)  # unclipped pixels follow image = floor(a * original + b)
        x, y = original[inside].double(), image[inside].double()
        a, b = np.polyfit(x.numpy(), y.numpy(), 1)
        assert np.abs(a * x.numpy() + b - y.numpy()).max() < 1.0 and torch.equal(image, image.round())
        assert 0.9 - 1e-2 <= a <= 1.1 + 1e-2 and -26.5 <= b <= 25.5 + 1e-3
        changed += not torch.equal(image, original)
    assert 0 < changed < len(rows)  # p = 0.5


def test_fit_on_device_batches_trains_and_validates(tmp_path: Path) -> None:
    data = small_problem(size=32)
    datamodule = DefectDataModule(data, 0.5, 0.25, batch_size=8, augment=train_augmentation(["flips"]))
    datamodule.device_images = DeviceImages(data, 0.5, 0.25, augment=["flips"])
    seen: list[torch.Tensor] = []
    validated: list[dict[str, torch.Tensor]] = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            seen.append(dict(batch))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
            validated.append(dict(batch))

    module = DefectClassifier(build_backbone("resnet18", "none"), optimizer=torch.optim.AdamW,
                              model_config={"arch": "resnet18", "num_classes": 2})
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, callbacks=[Spy()],
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    assert len(seen) == 2 and all(b["image"].shape == (8, 3, 32, 32) for b in seen)
    assert np.isfinite(float(trainer.callback_metrics["val/loss"]))
    host = DefectDataModule(data, 0.5, 0.25)
    plain = {int(r): host.dataset("train").__getitem__(i)["image"] for i, r in enumerate(host.part_rows("train"))}
    flipped = 0
    for batch in seen:  # each training image is its host image, flipped or not
        for row, image in zip(batch["row"].tolist(), batch["image"]):
            options = [plain[row], plain[row].flip(-1), plain[row].flip(-2), plain[row].flip(-1).flip(-2)]
            index = next(i for i, o in enumerate(options) if torch.equal(image, o))
            flipped += index > 0
    assert flipped > 0  # p = 3/4 per image over 16 images
    host_val = next(iter(host.loader("val")))
    assert torch.equal(validated[0]["image"], host_val["image"][: len(validated[0]["image"])])  # never augmented


@pytest.mark.parametrize("switch", [use_device_cache, use_async_checkpoints])
@pytest.mark.parametrize(("setting", "accelerator", "expected"), [
    ("auto", "cpu", False), (True, "cpu", True), (False, "gpu", False), ("auto", "gpu", torch.cuda.is_available()),
    ("auto", "auto", torch.cuda.is_available())])
def test_speed_switches_follow_the_accelerator(switch, setting: object, accelerator: str, expected: bool) -> None:
    assert switch(setting, accelerator) is expected  # auto: on when training runs on CUDA


def test_unknown_device_cache_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="data.device_cache: 'gpu' is not one of auto, true, false"):
        use_device_cache("gpu", "cpu")
