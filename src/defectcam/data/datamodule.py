"""LightningDataModule over one problem's cached uint8 images: 3-channel, normalized, labels, rows and ids in every batch."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler, get_worker_info

from defectcam.data.device_batches import DeviceImages, RowDataset
from defectcam.data.prepare import ProblemData
from defectcam.errors import ConfigError

if TYPE_CHECKING:  # albumentations takes about 0.6 s to import: every stage's CLI imports this module, few build a pipeline
    import albumentations as A


class DefectDataset(Dataset):
    """Rows of one part of a problem: dict(image (3,S,S) float, label, row, image_id).

    Masks stay out of batches: training never reads them, and they live at the dataset's native
    resolution (localization scores there), not at the image size the network sees.
    """

    def __init__(self, data: ProblemData, rows: np.ndarray, mean: float, std: float, augment: A.Compose | None = None):
        self.data, self.rows, self.mean, self.std, self.augment = data, rows, mean, std, augment
        # Plain arrays: __getitem__ runs once per image per epoch, pandas lookups there are slow.
        self.labels = data.table["label"].to_numpy()
        self.image_ids = data.table["image_id"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, object]:
        row = int(self.rows[i])
        image = np.asarray(self.data.images[row])
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        # A writable copy (64 KiB at 256 px): the cache is a read-only memory map, which torch cannot wrap safely.
        gray = (torch.from_numpy(np.array(image, dtype=np.uint8)).float().div_(255.0) - self.mean) / self.std
        return {
            "image": gray.unsqueeze(0).expand(3, -1, -1).contiguous(),
            "label": int(self.labels[row]),
            "row": row,
            "image_id": str(self.image_ids[row]),
        }


def train_normalization(data: ProblemData) -> tuple[float, float]:
    """Mean and std of the train part's pixels, in [0, 1] units."""
    rows = np.flatnonzero(data.table["part"].to_numpy() == "train")
    # Image by image: a float copy of all train images would cost gigabytes at 512 px.
    total = squares = 0.0
    for row in rows:
        image = data.images[row].astype(np.float64) / 255.0
        total, squares = total + image.sum(), squares + np.square(image).sum()
    count = len(rows) * data.images[0].size
    mean = total / count
    return float(mean), float(np.sqrt(max(squares / count - mean * mean, 0.0)))


AUGMENTATIONS = ("flips", "rot90", "jitter")
SAMPLERS = ("none", "balanced")
JITTER_LIMIT = 0.1  # brightness and contrast change of at most +-10 %: lighting varies, a faint defect must survive


def train_augmentation(names: Sequence[str] = ("flips",)) -> A.Compose | None:
    """Flips, 90-degree rotations and/or mild brightness/contrast jitter of the image; None when no name is given.

    No crop or shift: either could cut a small defect out of a defective image and leave a wrong label.
    """
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ConfigError(f"data.augment: unknown augmentation(s) {unknown}; choose from {', '.join(AUGMENTATIONS)}")
    import albumentations as A

    transforms: list[A.BasicTransform] = []
    if "flips" in names:
        transforms += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if "rot90" in names:
        # Only for textures without a preferred direction: a turned grain is another texture.
        transforms.append(A.RandomRotate90(p=0.5))
    if "jitter" in names:
        transforms.append(A.RandomBrightnessContrast(brightness_limit=JITTER_LIMIT, contrast_limit=JITTER_LIMIT, p=0.5))
    return A.Compose(transforms) if transforms else None


def balanced_sampler(labels: np.ndarray) -> WeightedRandomSampler:
    """Draws len(labels) indices with replacement, each class with equal probability (weight 1 / class count)."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    weights = 1.0 / counts[labels]  # a class absent from labels has no weight to give
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(labels), replacement=True)


class DefectDataModule(pl.LightningDataModule):
    """Loaders for the train/val/test parts of one problem, in split.csv order for val and test."""

    def __init__(
        self,
        data: ProblemData,
        mean: float,
        std: float,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: A.Compose | None = None,
        pin_memory: bool = False,
        sampler: str = "none",
    ) -> None:
        super().__init__()
        self.data, self.mean, self.std = data, mean, std
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.augment, self.pin_memory = num_workers, augment, pin_memory
        self.sampler = sampler
        # Set (by the train stage) to assemble train/val batches on the training device; None: the host path.
        self.device_images: DeviceImages | None = None

    @property
    def sampler(self) -> str:
        """How train batches are drawn: none (shuffled, each image once per epoch) or balanced (see balanced_sampler)."""
        return self._sampler

    @sampler.setter
    def sampler(self, name: str) -> None:
        if name not in SAMPLERS:
            raise ConfigError(f"data.sampler: {name!r} is not one of {', '.join(SAMPLERS)}")
        self._sampler = name

    def part_rows(self, part: str) -> np.ndarray:
        """Table rows of a part (train, val, test)."""
        return np.flatnonzero(self.data.table["part"].to_numpy() == part)

    def dataset(self, part: str, augment: bool = False) -> DefectDataset:
        """The dataset of one part, augmented only if asked."""
        return DefectDataset(self.data, self.part_rows(part), self.mean, self.std, self.augment if augment else None)

    def train_dataloader(self) -> DataLoader:
        self._seed_augmentation()
        dataset = self._fit_dataset("train")
        if self.sampler == "balanced":
            # Defects are rare on real data (1 image in 8): every batch then holds both classes about equally.
            return self._loader(dataset, self.batch_size, sampler=balanced_sampler(dataset.labels[dataset.rows]), drop_last=True)
        return self._loader(dataset, self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._fit_dataset("val"), self.eval_batch_size)

    def _fit_dataset(self, part: str) -> DefectDataset | RowDataset:
        """What fit's loaders read: images (host path) or only rows and labels (device path)."""
        if self.device_images is None:
            return self.dataset(part, augment=part == "train")
        return RowDataset(self.part_rows(part), self.data.table["label"].to_numpy())

    def _seed_augmentation(self) -> None:
        # albumentations draws from a generator of its own that seed_everything never touches (a fresh OS seed
        # otherwise): seed it from torch's seeded generator and the rank, so a seed gives the same training.
        # Loader workers reseed their copy (seed_loader_worker). The device path draws from torch itself.
        if self.augment is not None and self.device_images is None:
            drawn = int(torch.randint(2**31 - 1, ()).item())
            seed_pipeline(self.augment, int(np.random.SeedSequence([drawn, self._rank()]).generate_state(1)[0]))

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def on_after_batch_transfer(self, batch: dict[str, object], dataloader_idx: int) -> dict[str, object]:
        # Device path: the batch arrives as rows and labels; its images are gathered, normalized and augmented here.
        if self.device_images is not None and "image" not in batch:
            training = self.trainer is not None and self.trainer.training
            batch["image"] = self.device_images.batch(batch["row"], train=training)
        return batch

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size)

    def loader(self, part: str, batch_size: int | None = None) -> DataLoader:
        """An unshuffled, unaugmented loader over any part."""
        return self._loader(self.dataset(part), batch_size or self.eval_batch_size)

    def _loader(self, dataset: DefectDataset | RowDataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                sampler: Sampler[int] | None = None) -> DataLoader:
        # drop_last only when there is more than one batch: a tiny train part must still yield a step.
        drop_last = drop_last and len(dataset) > batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            worker_init_fn=partial(seed_loader_worker, rank=self._rank()),
        )


def seed_pipeline(augment: A.Compose, seed: int) -> None:
    """Seed an albumentations pipeline: one generator shared by all its transforms.

    albumentations' own `set_random_seed` (and `Compose(seed=...)`) gives every transform a generator with the
    same seed, so their draws coincide: HorizontalFlip fires exactly when VerticalFlip does and half of the
    eight flips/turns never occur. One shared stream keeps the draws independent.
    """
    augment.set_random_seed(seed)
    augment.set_random_state(augment.random_generator, augment.py_random)


def seed_loader_worker(worker_id: int, rank: int = 0) -> None:
    """A loader worker's seeding: Lightning's (torch, numpy, random from the base seed, worker and rank), then the
    worker's copy of the albumentations pipeline from the torch seed that gives it (its own generator).

    The rank is passed in: a worker started by spawn does not inherit the rank Lightning keeps in the parent."""
    pl_worker_init_function(worker_id, rank=rank)
    augment = getattr(get_worker_info().dataset, "augment", None)
    if augment is not None:
        seed_pipeline(augment, torch.initial_seed() % 2**32)
