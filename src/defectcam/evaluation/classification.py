"""Image-level classification metrics with the defect class as positive; pure torch, checked against sklearn."""

from __future__ import annotations

import math

import torch


def predict(p_defect: torch.Tensor) -> torch.Tensor:
    """Hard labels (N,) from defect probabilities (N,): the argmax of a 2-way softmax (ties go to defect-free)."""
    return (p_defect > 0.5).long()


def confusion(labels: torch.Tensor, predictions: torch.Tensor) -> dict[str, int]:
    """tn, fp, fn, tp counts with defect (1) as the positive class."""
    labels, predictions = labels.long().flatten(), predictions.long().flatten()
    counts = torch.bincount(labels * 2 + predictions, minlength=4).tolist()
    return {"tn": counts[0], "fp": counts[1], "fn": counts[2], "tp": counts[3]}


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (N,) scores vs (N,) 0/1 labels, ties counted half (Mann-Whitney U); NaN if one class."""
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision sum_n (R_n - R_{n-1}) P_n over distinct score thresholds (sklearn's definition); NaN if no positive."""
    scores, labels = scores.double().flatten(), labels.double().flatten()
    n_pos = float(labels.sum())
    if n_pos == 0:
        return math.nan
    order = torch.argsort(scores, descending=True, stable=True)
    scores, labels = scores[order], labels[order]
    tp = torch.cumsum(labels, 0)
    # Keep the last position of each run of tied scores: one point of the curve per distinct threshold.
    last = torch.ones_like(labels, dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    tp, seen = tp[last], torch.arange(1, len(labels) + 1, dtype=torch.float64)[last]
    precision, recall = tp / seen, tp / n_pos
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((steps * precision).sum())


def classification_metrics(p_defect: torch.Tensor, labels: torch.Tensor) -> dict[str, float | int]:
    """Accuracy, balanced accuracy, AUC-ROC and AP from scores, confusion counts, precision/recall/F1 (defect positive)."""
    labels = labels.long().flatten()
    counts = confusion(labels, predict(p_defect.flatten()))
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    present = [r for r, n in ((recall, tp + fn), (specificity, tn + fp)) if n > 0]
    return {
        "n": int(labels.numel()),
        "accuracy": _ratio(tp + tn, labels.numel()),
        "balanced_accuracy": sum(present) / len(present) if present else math.nan,
        "auc_roc": binary_auroc(p_defect, labels),
        "average_precision": average_precision(p_defect, labels),
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


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank (scipy's rankdata 'average')."""
    sorted_values, order = torch.sort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(values)
    ranks[order] = mean_rank[inverse]
    return ranks
