"""Image-level classification metrics with the defect class as positive; pure torch, checked against sklearn."""

from __future__ import annotations

import math

import torch

from defectcam.localization.pixel_scores import ranking_scores


def predict(p_defect: torch.Tensor) -> torch.Tensor:
    """Hard labels (N,) from defect probabilities (N,): the argmax of a 2-way softmax (ties go to defect-free)."""
    return (p_defect > 0.5).long()


def confusion(labels: torch.Tensor, predictions: torch.Tensor) -> dict[str, int]:
    """tn, fp, fn, tp counts with defect (1) as the positive class."""
    labels, predictions = labels.long().flatten(), predictions.long().flatten()
    counts = torch.bincount(labels * 2 + predictions, minlength=4).tolist()
    return {"tn": counts[0], "fp": counts[1], "fn": counts[2], "tp": counts[3]}


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of (N,) scores vs (N,) 0/1 labels (ties count half); NaN with one class."""
    return ranking_scores(scores, labels).auroc


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision (sklearn's step-wise definition) of (N,) scores; NaN without a positive."""
    return ranking_scores(scores, labels).average_precision


def classification_metrics(p_defect: torch.Tensor, labels: torch.Tensor) -> dict[str, float | int]:
    """Accuracy, balanced accuracy, AUC-ROC and AP from scores, confusion counts, precision/recall/F1 (defect positive)."""
    labels = labels.long().flatten()
    counts = confusion(labels, predict(p_defect.flatten()))
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    ranking = ranking_scores(p_defect, labels)
    present = [r for r, n in ((recall, tp + fn), (specificity, tn + fp)) if n > 0]
    return {
        "n": int(labels.numel()),
        "accuracy": _ratio(tp + tn, labels.numel()),
        "balanced_accuracy": sum(present) / len(present) if present else math.nan,
        "auc_roc": ranking.auroc,
        "average_precision": ranking.average_precision,
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        **counts,
    }


def undefined_metrics_note(labels: torch.Tensor) -> str | None:
    """A message when a split lacks a class (AUC-ROC and balanced accuracy are then undefined), else None."""
    n_pos = int(labels.sum())
    if n_pos == 0:
        return "no defective image: AUC-ROC and AP are undefined (NaN), recall is 0"
    if n_pos == labels.numel():
        return "no defect-free image: AUC-ROC is undefined (NaN)"
    return None


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0 when the denominator is 0 (sklearn's zero_division=0)."""
    return float(numerator) / float(denominator) if denominator else 0.0

