"""The DataModule: shapes, dtypes, per-problem normalization, augmentation, balanced sampling of train batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from defectcam.data.dagm import index_dagm
from defectcam.data.datamodule import DefectDataModule, train_augmentation, train_normalization
from defectcam.data.prepare import SplitSettings, ensure_cache, ensure_split
from defectcam.errors import ConfigError


@pytest.fixture
def problem_data(dagm_root: Path, tmp_path: Path):
    table = ensure_split(index_dagm(dagm_root), tmp_path / "p1", SplitSettings("official", 0, 0.25, 0.15))
    return ensure_cache(table, tmp_path / "p1", 32, show_progress=False)


def test_batches_carry_images_labels_and_ids(problem_data) -> None:
    mean, std = train_normalization(problem_data)
    dm = DefectDataModule(problem_data, mean, std, batch_size=4, eval_batch_size=5)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (5, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 2])  # gray replicated
    assert "mask" not in batch  # masks stay at native resolution, in ProblemData
    assert batch["label"].dtype == torch.int64 and len(batch["image_id"]) == 5
    labels = problem_data.table["label"].to_numpy()
    assert batch["label"].tolist() == labels[batch["row"].numpy()].tolist()
    rows = dm.part_rows("test")
    assert batch["row"].tolist() == rows[:5].tolist()  # split.csv order


def test_normalization_from_train_part(problem_data) -> None:
    mean, std = train_normalization(problem_data)
    dm = DefectDataModule(problem_data, mean, std, batch_size=64)
    images = torch.cat([b["image"][:, 0] for b in dm.loader("train")])
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1.0) < 1e-2
    raw = np.asarray(problem_data.images[dm.part_rows("train")], dtype=np.float64) / 255
    assert mean == pytest.approx(raw.mean()) and std == pytest.approx(raw.std())


def test_augmentation_is_a_flip_or_turn_of_the_image(problem_data) -> None:
    dm = DefectDataModule(problem_data, 0.0, 1.0, augment=train_augmentation(["flips", "rot90"]))
    dataset = dm.dataset("train", augment=True)
    torch.manual_seed(0)
    np.random.seed(0)
    moved = 0
    for i in range(len(dataset)):
        original = dm.dataset("train")[i]["image"][0]
        turns = [torch.rot90(flipped, k, (0, 1)) for flipped in (original, original.flip(1)) for k in range(4)]
        for _ in range(3):
            image = dataset[i]["image"][0]
            moved += not torch.equal(image, original)
            assert any(torch.equal(image, turned) for turned in turns)  # pixels moved, never changed
    assert moved > 0, "augmentation never changed a sample"


def test_cache_is_reused_and_images_resized(problem_data, tmp_path: Path) -> None:
    meta = tmp_path / "p1" / "cache" / "meta_32.json"
    stamp = meta.stat().st_mtime_ns
    again = ensure_cache(problem_data.table, tmp_path / "p1", 32, show_progress=False)
    assert meta.stat().st_mtime_ns == stamp and np.array_equal(again.images, problem_data.images)
    small = ensure_cache(problem_data.table, tmp_path / "p1", 16, show_progress=False)
    assert small.images.shape[1:] == (16, 16) and small.images.dtype == np.uint8
    assert small.masks.shape[1:] == (32, 32) and np.array_equal(small.masks, problem_data.masks)  # masks stay native


def _defect_share(dm: DefectDataModule, epochs: int) -> float:
    """Share of defective images among the train batches of `epochs` epochs."""
    labels = torch.cat([batch["label"] for _ in range(epochs) for batch in dm.train_dataloader()])
    return float(labels.float().mean())


def test_balanced_sampler_draws_both_classes_equally(problem_data) -> None:
    train_labels = problem_data.table["label"].to_numpy()[DefectDataModule(problem_data, 0.0, 1.0).part_rows("train")]
    assert 0 < train_labels.mean() <= 0.3  # the fixture is imbalanced: a quarter defective
    torch.manual_seed(0)
    plain = DefectDataModule(problem_data, 0.0, 1.0, batch_size=4)
    balanced = DefectDataModule(problem_data, 0.0, 1.0, batch_size=4, sampler="balanced")
    assert _defect_share(plain, 30) == pytest.approx(train_labels.mean(), abs=0.05)  # each image once per epoch
    assert _defect_share(balanced, 30) == pytest.approx(0.5, abs=0.07)
    assert len(balanced.train_dataloader()) == len(plain.train_dataloader())  # an epoch keeps its length


def test_unknown_sampler_is_refused(problem_data) -> None:
    with pytest.raises(ConfigError, match="data.sampler: 'oversample'"):
        DefectDataModule(problem_data, 0.0, 1.0, sampler="oversample")


def test_jitter_changes_brightness_and_contrast_mildly_never_geometry(problem_data) -> None:
    dm = DefectDataModule(problem_data, 0.0, 1.0, augment=train_augmentation(["jitter"]))
    dataset, plain = dm.dataset("train", augment=True), dm.dataset("train")
    np.random.seed(0)
    changed = 0
    for i in range(len(dataset)):
        original, image = plain[i]["image"][0].double(), dataset[i]["image"][0].double()
        changed += not torch.equal(image, original)
        # A pixel-wise affine map of the same image (same place, +-10 % gain), not a moved one.
        gain = torch.cov(torch.stack([image.flatten(), original.flatten()]))[0, 1] / original.var()
        assert torch.corrcoef(torch.stack([image.flatten(), original.flatten()]))[0, 1] > 0.99
        assert 0.85 < float(gain) < 1.15
        assert abs(float(image.mean() - original.mean())) < 0.15
    assert changed > 0, "jitter never changed a sample"


def test_unknown_augmentation_is_refused() -> None:
    with pytest.raises(ConfigError, match="data.augment: unknown"):
        train_augmentation(["crop"])


def orientations(dm: DefectDataModule, batches: list[dict]) -> list[list[int]]:
    """Per batch, which of the 8 flips/turns of its unaugmented image each image is (0 = as stored)."""
    plain = dm.dataset("train")
    found = []
    for batch in batches:
        ids = []
        for image, row in zip(batch["image"][:, 0], batch["row"].tolist()):
            original = plain[int(np.flatnonzero(plain.rows == row)[0])]["image"][0]
            variants = [torch.rot90(base, k, (0, 1)) for base in (original, original.flip(-1)) for k in range(4)]
            ids.append(next(i for i, variant in enumerate(variants) if torch.equal(variant, image)))
        found.append(ids)
    return found


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_seed_gives_the_same_augmented_batches(problem_data, num_workers: int) -> None:
    """albumentations keeps a generator of its own: the DataModule seeds it from torch's, in workers too."""

    def epoch(seed: int) -> tuple[DefectDataModule, list[dict]]:
        torch.manual_seed(seed)
        dm = DefectDataModule(problem_data, 0.5, 0.25, batch_size=4, num_workers=num_workers,
                              augment=train_augmentation(["flips", "rot90"]))
        return dm, list(dm.train_dataloader())

    dm, first = epoch(0)
    again, other = epoch(0)[1], epoch(1)[1]
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["row"], b["row"]) for a, b in zip(first, again))
    assert orientations(dm, first) != orientations(dm, other)
    if num_workers:  # batches alternate between the two workers: each must draw its own augmentations
        drawn = orientations(dm, first)
        assert any(a != b for a, b in zip(drawn[0::2], drawn[1::2]))


def test_seeded_augmentation_draws_all_eight_orientations(problem_data) -> None:
    # albumentations' own seeding gives every transform the same seed: the two flips then fire together and
    # half of the orientations never occur. The DataModule's seeding keeps the transforms' draws independent.
    torch.manual_seed(0)
    dm = DefectDataModule(problem_data, 0.5, 0.25, batch_size=4, augment=train_augmentation(["flips", "rot90"]))
    drawn = [i for _ in range(4) for ids in orientations(dm, list(dm.train_dataloader())) for i in ids]
    assert sorted(set(drawn)) == list(range(8))


def test_the_worker_count_is_part_of_the_seeded_run(problem_data) -> None:
    """Why datamodule_for keeps data.num_workers above the CPU count: each worker draws its own augmentations, so
    the same seed with another count gives other batches."""

    def drawn(num_workers: int) -> list[list[int]]:
        torch.manual_seed(0)
        dm = DefectDataModule(problem_data, 0.5, 0.25, batch_size=4, num_workers=num_workers,
                              augment=train_augmentation(["flips", "rot90"]))
        return orientations(dm, list(dm.train_dataloader()))

    assert drawn(1) != drawn(2)


def test_more_workers_than_cpus_is_kept_and_said_once_in_place_of_torchs_warning(problem_data, compose_cfg, monkeypatch,
                                                                                caplog) -> None:
    import warnings

    from torch.utils.data import DataLoader

    from defectcam.stages import train
    from defectcam.stages.shell import quiet_known_warnings

    monkeypatch.setattr(train, "usable_cpus", lambda: 2)

    def said(*overrides: str) -> list[str]:
        caplog.clear()
        with caplog.at_level("INFO", logger=train.__name__):
            datamodule = train.train_datamodule(compose_cfg("data.augment=[flips]", *overrides), problem_data, (0.5, 0.25))
        assert datamodule.num_workers == int(overrides[0].split("=")[1])  # kept as asked
        return [r.getMessage() for r in caplog.records if "num_workers" in r.getMessage()]

    assert said("data.num_workers=3") == [
        "data.num_workers=3 exceeds the 2 CPUs this process may use: kept, since each loader worker draws its own "
        "seeded augmentation (another count gives another, equally valid run); lower it if loading stalls"]
    assert said("data.num_workers=2") == []
    assert said("data.num_workers=3", "data.augment=[]") == []  # no augmentation, nothing the count changes

    def torch_warnings(quiet: bool) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                quiet_known_warnings()
            DataLoader(range(4), num_workers=len(os.sched_getaffinity(0)) + 1)  # torch checks the count on creation
        return [str(w.message) for w in caught]

    assert any("worker processes" in message for message in torch_warnings(quiet=False))
    assert torch_warnings(quiet=True) == []
