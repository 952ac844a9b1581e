"""Train/validation/test splits: DAGM's official Train/Test, and the reference study's pooled 70/15/15."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defectcam.errors import ConfigError, DatasetError

SPLIT_KINDS = ("official", "paper")
PARTS = ("train", "val", "test")


def make_split(index: pd.DataFrame, kind: str, seed: int, val_fraction: float, test_fraction: float = 0.15) -> pd.Series:
    """A `part` (train/val/test) per row of one problem's table (columns source_split, label); stratified, seeded."""
    if kind == "official":
        parts = _official(index, seed, val_fraction)
    elif kind == "paper":
        parts = _pooled(index, seed, val_fraction, test_fraction)
    else:
        raise ConfigError(f"data.split: {kind!r} is not one of {', '.join(SPLIT_KINDS)}")
    _check_parts(index, parts)
    return parts


def _official(index: pd.DataFrame, seed: int, val_fraction: float) -> pd.Series:
    """DAGM's Train gives train and validation (stratified, val_fraction), its Test gives test."""
    parts = pd.Series("test", index=index.index, dtype=object)
    train_rows = index.index[index["source_split"] == "Train"]
    fit, val = _stratified(train_rows, index.loc[train_rows, "label"], val_fraction, seed, "data.val_fraction")
    parts[fit] = "train"
    parts[val] = "val"
    return parts


def _pooled(index: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float) -> pd.Series:
    """Pool Train and Test, take val+test out (the study's 30 %), halve it: 805/172/173 for 1150 images."""
    held_fraction = val_fraction + test_fraction
    fit, held = _stratified(index.index, index["label"], held_fraction, seed, "data.val_fraction + data.test_fraction")
    val, test = _stratified(held, index.loc[held, "label"], test_fraction / held_fraction, seed, "data.test_fraction")
    parts = pd.Series("train", index=index.index, dtype=object)
    parts[val] = "val"
    parts[test] = "test"
    return parts


def _stratified(
    rows: pd.Index | np.ndarray, labels: pd.Series, fraction: float, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{key}: {fraction:g} must lie strictly between 0 and 1")
    counts = labels.value_counts()
    stratify = labels.to_numpy() if len(counts) == 2 and counts.min() >= 2 else None
    # Imported here: scikit-learn takes about 0.9 s to import, and every stage's CLI imports this module.
    from sklearn.model_selection import train_test_split

    keep, held = train_test_split(np.asarray(rows), test_size=fraction, random_state=seed, shuffle=True, stratify=stratify)
    return np.sort(keep), np.sort(held)


def _check_parts(index: pd.DataFrame, parts: pd.Series) -> None:
    problem = int(index["problem"].iloc[0])
    for part in PARTS:
        labels = index.loc[parts == part, "label"]
        if labels.empty:
            raise DatasetError(f"problem {problem}: the {part} part is empty; the problem has too few images")
        if labels.sum() == 0:
            raise DatasetError(f"problem {problem}: the {part} part holds no defective image; the problem has too few defects")
