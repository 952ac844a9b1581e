"""Assemble the report tables from the per-problem files the earlier stages wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from defectcam.errors import StageOrderError
from defectcam.fullres import REFERENCE_METHODS
from defectcam.io import read_json
from defectcam.localization.bootstrap import bootstrap_interval
from defectcam.localization.products import product_cam

# accuracy .. tp: the decision margin > decision_threshold (evaluate.decision); *_argmax: margin > 0, the reference study's.
CLASSIFICATION_COLUMNS = [
    "problem", "n", "decision_threshold", "accuracy", "balanced_accuracy", "auc_roc", "average_precision", "precision",
    "recall", "f1", "tn", "fp", "fn", "tp", "accuracy_argmax", "balanced_accuracy_argmax", "fp_argmax", "fn_argmax",
    "best_val_accuracy", "train_time_s", "latency_ms_mean", "latency_ms_std", "throughput_img_s",
]
SCORE_COLUMNS = ["accuracy", "balanced_accuracy", "auc_roc", "average_precision", "precision", "recall", "f1",
                 "accuracy_argmax", "balanced_accuracy_argmax", "best_val_accuracy"]
ENTRY = ["method", "layer", "gate", "postprocess"]
LOCALIZATION_COLUMNS = [
    "problem", *ENTRY, "split", "selection", "select_on", "threshold", "miou", "miou_ci_low", "miou_ci_high",
    "all_miou", "all_miou_ci_low", "all_miou_ci_high", "dataset_iou", "two_class_miou", "false_alarm",
    "image_false_alarm", "pixel_auroc", "pxap", "n_defective", "n_defect_free",
]
MATRIX_SCORES = ["miou", "all_miou", "false_alarm", "image_false_alarm", "pixel_auroc", "pxap"]
BASELINE_LAYER = "-"


def _require(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise StageOrderError(f"{path}: missing; run the {stage} stage first (make {stage})")
    return path


def classification_table(problem_dirs: dict[int, Path]) -> pd.DataFrame:
    """One row per problem from metrics.json (scores are fractions in [0, 1])."""
    rows = [read_json(_require(d / "metrics.json", "evaluate")) for d in problem_dirs.values()]
    table = pd.DataFrame(rows)[CLASSIFICATION_COLUMNS]
    # An undefined score is null in metrics.json: NaN here, so a column of nothing but nulls is still numeric.
    return table.apply(pd.to_numeric)


def classification_display(table: pd.DataFrame) -> pd.DataFrame:
    """The classification table with a mean row, for Markdown/LaTeX."""
    mean = table.drop(columns=["problem"]).mean(numeric_only=True).to_dict()
    display = pd.concat([table.astype({"problem": object}), pd.DataFrame([{"problem": "mean", **mean}])], ignore_index=True)
    for column in ("n", "tn", "fp", "fn", "tp", "fp_argmax", "fn_argmax"):
        display[column] = display[column].map(lambda v: f"{v:.1f}" if v % 1 else f"{int(v)}")
    return display


def localization_rows(problem_dirs: dict[int, Path], name: str = "localization.csv") -> pd.DataFrame:
    """Every row of every problem's localization.csv (or localization_images.csv)."""
    return pd.concat([pd.read_csv(_require(d / name, "localize")) for d in problem_dirs.values()], ignore_index=True)


def localization_table(rows: pd.DataFrame, selection: str = "val-best") -> pd.DataFrame:
    """Test rows: one per problem x method x layer x gate x post-process at the validation-chosen (or fixed) threshold."""
    test = rows[(rows["split"] == "test") & (rows["selection"] == selection)]
    return test[LOCALIZATION_COLUMNS].reset_index(drop=True)


def localization_matrix(table: pd.DataFrame, images: pd.DataFrame | None = None, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean test scores over problems per method x layer x gate x post-process.

    With the per-image scores (localization_images.csv), miou and all_miou get 95 % intervals of
    the mean over problems: images are resampled within each problem (a stratified bootstrap), so
    every problem keeps its weight.
    """
    grouped = table.groupby(ENTRY, sort=False).agg(**{s: (s, "mean") for s in MATRIX_SCORES}, problems=("problem", "nunique"))
    grouped = grouped.reset_index()
    if images is None:
        return grouped
    intervals = {key: _mean_intervals(group, resamples, seed) for key, group in images.groupby(ENTRY, sort=False)}
    for i, name in enumerate(("miou_ci_low", "miou_ci_high", "all_miou_ci_low", "all_miou_ci_high")):
        grouped[name] = [intervals.get(tuple(row), (np.nan,) * 4)[i] for row in grouped[ENTRY].itertuples(index=False)]
    columns = ["miou", "miou_ci_low", "miou_ci_high", "all_miou", "all_miou_ci_low", "all_miou_ci_high"]
    return grouped[ENTRY + columns + [c for c in grouped.columns if c not in ENTRY + columns]]


def _mean_intervals(images: pd.DataFrame, resamples: int, seed: int) -> tuple[float, float, float, float]:
    """Stratified (by problem) bootstrap intervals of the mean over problems of mIoU and all-mIoU."""
    problems = torch.as_tensor(images["problem"].to_numpy())
    defective = images["defective"].to_numpy(dtype=bool)
    miou = bootstrap_interval(torch.as_tensor(images["iou"].to_numpy()[defective]), resamples, seed, strata=problems[defective])
    all_miou = bootstrap_interval(torch.as_tensor(images["all_iou"].to_numpy()), resamples, seed, strata=problems)
    return (*miou, *all_miou)


def per_problem_matrix(table: pd.DataFrame, score: str = "miou") -> pd.DataFrame:
    """A test score with one column per problem and a mean column, one row per method x layer x gate x post-process."""
    wide = table.pivot_table(index=ENTRY, columns="problem", values=score, sort=False)
    wide.columns = [f"P{c}" for c in wide.columns]
    wide["mean"] = wide.mean(axis=1)
    return wide.reset_index()


def heat_matrix(table: pd.DataFrame, gate: str, postprocess: str, score: str = "miou") -> pd.DataFrame:
    """Mean test `score` over problems as method (rows) x layer (columns), one gate and post-process; baselines in column '-'."""
    chosen = table[(table["gate"] == gate) & (table["postprocess"] == postprocess)]
    return chosen.pivot_table(index="method", columns="layer", values=score, aggfunc="mean", sort=False)


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per problem and gate, the entry a user would pick on validation, by mIoU and by all-mIoU, with its test scores.

    Entries are CAM methods, layers, fusions, full-resolution decoders and post-processes (baselines and the
    fully supervised reference excluded); the best baseline, picked the same way, stands beside it, and the
    reference (a decoder trained on true masks), picked the same way, with the share of its test mIoU the
    chosen entry reaches. Nothing here is chosen on test.
    """
    chosen = rows[rows["selection"] == "val-best"]
    out = []
    for (problem, gate), group in chosen.groupby(["problem", "gate"], sort=False):
        val, test = group[group["split"] == "val"], group[group["split"] == "test"].set_index(ENTRY[:2] + ["postprocess"])
        reference_rows = val["method"].isin(REFERENCE_METHODS)
        for chosen_by in ("miou", "all_miou"):
            best = _pick(val[(val["layer"] != BASELINE_LAYER) & ~reference_rows], chosen_by)
            baseline = _pick(val[val["layer"] == BASELINE_LAYER], chosen_by)
            reference = _pick(val[reference_rows], chosen_by)
            if best is None:
                continue
            result = test.loc[(best["method"], best["layer"], best["postprocess"])]
            row = {"problem": problem, "gate": gate, "chosen_by": chosen_by, "method": best["method"], "layer": best["layer"],
                   "postprocess": best["postprocess"], "select_on": result["select_on"], "threshold": result["threshold"]}
            for score in ("miou", "miou_ci_low", "miou_ci_high", "all_miou", "all_miou_ci_low", "all_miou_ci_high",
                          "false_alarm", "image_false_alarm", "n_defect_free"):
                row[score] = result[score]
            if baseline is not None:
                suffix = "" if baseline["postprocess"] == "none" else f" + {baseline['postprocess']}"
                row["best_baseline"] = baseline["method"] + suffix
                row["baseline_miou"] = test.loc[(baseline["method"], baseline["layer"], baseline["postprocess"]), "miou"]
            if reference is not None:
                row["reference"] = entry_name(reference["method"], reference["layer"], reference["postprocess"])
                row["reference_miou"] = test.loc[(reference["method"], reference["layer"], reference["postprocess"]), "miou"]
                row["share_of_reference"] = row["miou"] / row["reference_miou"] if row["reference_miou"] > 0 else np.nan
            out.append(row)
    return pd.DataFrame(out)


def _pick(val: pd.DataFrame, score: str) -> pd.Series | None:
    """The validation row with the highest score (first in table order on ties; NaN scores never), or None."""
    val = val[val[score].notna()]
    return None if val.empty else val.loc[val[score].idxmax()]


def entry_name(method: str, layer: str, postprocess: str) -> str:
    """An entry as a person reads it: 'layercam layer1 + ellipse', 'the full-resolution map (from layercam/layer2)'."""
    names = {"fullres": f"the full-resolution map (from {layer})", "supervised": "the decoder trained on true masks"}
    cam = product_cam(method)
    name = f"the full-resolution map x {cam} {layer}" if cam is not None else names.get(method, f"{method} {layer}")
    return name + ("" if postprocess == "none" else f" + {postprocess}")


def answer_sentences(summary: pd.DataFrame, select_on: str = "miou") -> dict[int, str]:
    """Per problem, the answer in words from the summary table: the entry validation chose (ungated) and its test
    mIoU with interval, how many defect-free test images it flags, the same with the classifier gate, and the best
    baseline. Every figure is a test score of an entry chosen on validation."""
    sentences: dict[int, str] = {}
    if summary.empty:
        return sentences
    for problem, group in summary[summary["chosen_by"] == select_on].groupby("problem", sort=False):
        by_gate = {row["gate"]: row for _, row in group.iterrows()}
        parts = []
        if "none" in by_gate:
            row = by_gate["none"]
            parts.append(f"Problem {problem}: {entry_name(row['method'], row['layer'], row['postprocess'])} (chosen on "
                         f"validation) finds defects with test mIoU {row['miou']:.2f} [{row['miou_ci_low']:.2f}, "
                         f"{row['miou_ci_high']:.2f}] and {_flagged(row)}.")
        if "classifier" in by_gate:
            row = by_gate["classifier"]
            lead = "Gated by the classifier" if parts else f"Problem {problem}, gated by the classifier:"
            parts.append(f"{lead}, {entry_name(row['method'], row['layer'], row['postprocess'])} {_flagged(row)} "
                         f"(test mIoU {row['miou']:.2f} [{row['miou_ci_low']:.2f}, {row['miou_ci_high']:.2f}], "
                         f"all-mIoU {row['all_miou']:.2f}).")
        first = by_gate.get("none", next(iter(by_gate.values())))
        if isinstance(first.get("best_baseline"), str):
            parts.append(f"The best baseline ({first['best_baseline']}) scores {first['baseline_miou']:.2f}.")
        if isinstance(first.get("reference"), str):
            parts.append(f"The fully supervised reference ({first['reference']} of the train part) scores "
                         f"{first['reference_miou']:.2f}; the weakly supervised entry reaches {100 * first['share_of_reference']:.0f} % of it.")
        sentences[int(problem)] = " ".join(parts)
    return sentences


def _flagged(row: pd.Series) -> str:
    """'flags k of n defect-free test images': those with any predicted pixel (image_false_alarm x n_defect_free)."""
    n = int(row["n_defect_free"]) if pd.notna(row.get("n_defect_free")) else 0
    if not n:
        return "has no defect-free test image to flag"
    return f"flags {round(float(row['image_false_alarm']) * n)} of {n} defect-free test images"
