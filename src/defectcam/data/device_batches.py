"""Train and validation batches assembled on the training device from a uint8 image cache copied there once.

On a GPU the host pipeline (one image at a time: numpy augmentation, float conversion, a 3 MB float copy at
512 px, a host-to-device transfer) costs more than the step. Here the loaders only yield row numbers and
labels; the problem's uint8 images (all its parts: 1150 x 512 x 512 = 301 MB for a problem of the paper split)
are copied to the device on first use, and
normalization and augmentation run there on the whole batch. The augmentations follow `train_augmentation`'s
(see datamodule.py): the same flips, 90-degree turns and brightness/contrast jitter, drawn per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from defectcam.cuda_switch import on_cuda_switch
from defectcam.data.prepare import ProblemData


class RowDataset(Dataset):
    """Rows of one part as dict(row, label): the images are looked up on the device (DeviceImages)."""

    def __init__(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self.rows, self.labels = rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, int]:
        row = int(self.rows[i])
        return {"row": row, "label": int(self.labels[row])}


def use_device_cache(setting: object, accelerator: str) -> bool:
    """data.device_cache: auto (on when training runs on CUDA) | true (also on the CPU, for tests) | false."""
    return on_cuda_switch(setting, "data.device_cache", accelerator)


def brightness_contrast(gray: torch.Tensor, contrast: torch.Tensor, brightness: torch.Tensor) -> torch.Tensor:
    """(N, H, W) grey levels 0..255 (float32), per-image contrast c and brightness b (N,) -> floor(clip(x (1 + c) + 255 b))."""
    scaled = gray * (1 + contrast)[:, None, None] + (brightness * 255.0)[:, None, None]
    return scaled.clamp_(0.0, 255.0).floor_()


class DeviceImages:
    """A problem's uint8 images on one device, turned into normalized (and, for training, augmented) batches."""

    def __init__(self, data: ProblemData, mean: float, std: float, augment: Sequence[str] = (), jitter_limit: float = 0.1) -> None:
        self.data, self.mean, self.std = data, mean, std
        self.augment, self.jitter_limit = tuple(augment), jitter_limit
        self._images: torch.Tensor | None = None

    def images_on(self, device: torch.device) -> torch.Tensor:
        """(N, S, S) uint8 on `device`, copied from the memory-mapped cache once."""
        if self._images is None or self._images.device != device:
            self._images = torch.from_numpy(np.array(self.data.images, dtype=np.uint8)).to(device)
        return self._images

    def batch(self, rows: torch.Tensor, train: bool) -> torch.Tensor:
        """(B, 3, S, S) float32 images of table rows `rows` (on the device), normalized as the host path does."""
        gray = self.images_on(rows.device)[rows].float()
        if train and "jitter" in self.augment:
            gray = self._jitter(gray)
        gray = gray.div_(255.0).sub_(self.mean).div_(self.std)
        if train:
            gray = self._geometric(gray)
        return gray.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()

    def _jitter(self, gray: torch.Tensor) -> torch.Tensor:
        # As albumentations' RandomBrightnessContrast on uint8 (p=0.5, by max): x * (1 + c) + b * 255 in float32,
        # clipped to [0, 255] and truncated to a whole grey level (equal to it for every c, b: tested).
        n, limit = len(gray), self.jitter_limit
        applied = torch.rand(n, device=gray.device) < 0.5
        contrast = torch.empty(n, device=gray.device).uniform_(-limit, limit) * applied
        brightness = torch.empty(n, device=gray.device).uniform_(-limit, limit) * applied
        return brightness_contrast(gray, contrast, brightness)

    def _geometric(self, gray: torch.Tensor) -> torch.Tensor:
        n = len(gray)
        if "flips" in self.augment:
            gray = torch.where((torch.rand(n, device=gray.device) < 0.5)[:, None, None], gray.flip(-1), gray)
            gray = torch.where((torch.rand(n, device=gray.device) < 0.5)[:, None, None], gray.flip(-2), gray)
        if "rot90" in self.augment:
            # p=0.5, then a quarter turn k in 0..3 (k=0 included), as RandomRotate90; images are square.
            turns = torch.randint(0, 4, (n,), device=gray.device) * (torch.rand(n, device=gray.device) < 0.5)
            for k in (1, 2, 3):
                gray = torch.where((turns == k)[:, None, None], torch.rot90(gray, k, dims=(-2, -1)), gray)
        return gray
