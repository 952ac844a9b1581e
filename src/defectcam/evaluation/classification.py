"""Image-level classification metrics with the defect class as positive; pure torch, checked against sklearn.

Ranking metrics (AUC-ROC, AP) take the logit margin ``logit[1] - logit[0]``, not the softmax probability:
p_defect = sigmoid(margin) is exactly 1.0 in float32 once the margin passes ~17 (and 0.0 below ~-104),
so confident errors would tie with confident hits. The margin ranks like p_defect wherever p_defect does
not saturate, and keeps ranking where it does. Hard decisions are margin > threshold: 0 is the classifier's
argmax, and `defectcam.evaluation.decision` chooses another threshold on validation.
"""

from __future__ import annotations

import math

import torch

from defectcam.localization.pixel_scores import ranking_scores


def logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """The defect score (N,) of (N, 2) logits: logit[1] - logit[0], in float32 or wider (never saturates)."""
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"logit_margin needs (N, 2) logits, got shape {tuple(logits.shape)}")
    logits = logits if logits.dtype == torch.float64 else logits.float()  # bf16 logits would round the margin
    return logits[:, 1] - logits[:, 0]


def predict(margin: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Hard labels (N,) from logit margins (N,): defect where margin > threshold; 0 is the argmax of the 2 logits
    (ties go to defect-free, like argmax)."""
    return (margin > threshold).long()


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


def classification_metrics(margin: torch.Tensor, labels: torch.Tensor, threshold: float = 0.0) -> dict[str, float | int]:
    """(N,) logit margins and (N,) 0/1 labels -> accuracy, balanced accuracy, confusion counts and
    precision/recall/F1 (defect positive) of the decision margin > threshold (0: the argmax), AUC-ROC and AP of the margins."""
    labels, margin = labels.long().flatten(), margin.flatten()
    counts = confusion(labels, predict(margin, threshold))
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    ranking = ranking_scores(margin, labels)
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
        return "no defective image: AUC-ROC and AP are undefined (NaN; null in metrics.json), recall is 0"
    if n_pos == labels.numel():
        return "no defect-free image: AUC-ROC is undefined (NaN; null in metrics.json)"
    return None


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0 when the denominator is 0 (sklearn's zero_division=0)."""
    return float(numerator) / float(denominator) if denominator else 0.0

