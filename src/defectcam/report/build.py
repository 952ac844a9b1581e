"""Assemble the report tables from the per-problem files the earlier stages wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from defectcam.errors import StageOrderError
from defectcam.io import read_json

CLASSIFICATION_COLUMNS = [
    "problem", "n", "accuracy", "balanced_accuracy", "auc_roc", "average_precision", "precision", "recall", "f1",
    "tn", "fp", "fn", "tp", "best_val_accuracy", "train_time_s", "latency_ms_mean", "latency_ms_std", "throughput_img_s",
]
SCORE_COLUMNS = ["accuracy", "balanced_accuracy", "auc_roc", "average_precision", "precision", "recall", "f1", "best_val_accuracy"]
LOCALIZATION_COLUMNS = [
    "problem", "method", "layer", "split", "selection", "threshold", "miou", "dataset_iou", "two_class_miou",
    "pixel_auroc", "pxap", "false_alarm", "n_defective",
]


def _require(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise StageOrderError(f"{path}: missing; run the {stage} stage first (make {stage})")
    return path


def classification_table(problem_dirs: dict[int, Path]) -> pd.DataFrame:
    """One row per problem from metrics.json (scores are fractions in [0, 1])."""
    rows = [read_json(_require(d / "metrics.json", "evaluate")) for d in problem_dirs.values()]
    return pd.DataFrame(rows)[CLASSIFICATION_COLUMNS]


def classification_display(table: pd.DataFrame) -> pd.DataFrame:
    """The classification table with a mean row, for Markdown/LaTeX."""
    mean = table.drop(columns=["problem"]).mean(numeric_only=True).to_dict()
    display = pd.concat([table.astype({"problem": object}), pd.DataFrame([{"problem": "mean", **mean}])], ignore_index=True)
    for column in ("n", "tn", "fp", "fn", "tp"):
        display[column] = display[column].map(lambda v: f"{v:.1f}" if v % 1 else f"{int(v)}")
    return display


def localization_rows(problem_dirs: dict[int, Path]) -> pd.DataFrame:
    """Every row of every problem's localization.csv."""
    return pd.concat([pd.read_csv(_require(d / "localization.csv", "localize")) for d in problem_dirs.values()], ignore_index=True)


def localization_table(rows: pd.DataFrame, selection: str = "val-best") -> pd.DataFrame:
    """Test rows: one per problem x method x layer at the threshold chosen on validation (or fixed ones)."""
    test = rows[(rows["split"] == "test") & (rows["selection"] == selection)]
    return test[LOCALIZATION_COLUMNS].reset_index(drop=True)


def localization_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test mIoU over problems as method x layer (with mean pixel AUROC and PxAP per method/layer)."""
    grouped = table.groupby(["method", "layer"], sort=False).agg(
        miou=("miou", "mean"), dataset_iou=("dataset_iou", "mean"), pixel_auroc=("pixel_auroc", "mean"), pxap=("pxap", "mean"),
        problems=("problem", "nunique"),
    )
    return grouped.reset_index()


def per_problem_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Test mIoU with one column per problem and a mean column, one row per method/layer."""
    wide = table.pivot_table(index=["method", "layer"], columns="problem", values="miou", sort=False)
    wide.columns = [f"P{c}" for c in wide.columns]
    wide["mean"] = wide.mean(axis=1)
    return wide.reset_index()
