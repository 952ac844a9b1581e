"""Classification metrics (defect = positive) against scikit-learn on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from defectcam.evaluation.classification import (
    average_precision,
    binary_auroc,
    classification_metrics,
    undefined_metrics_note,
)

CASES = {
    "mixed": ([0, 0, 1, 1, 0, 1, 0, 0], [0.1, 0.6, 0.8, 0.4, 0.2, 0.9, 0.5, 0.3]),
    "ties": ([0, 1, 0, 1, 1, 0, 0, 1, 0, 0], [0.5, 0.5, 0.2, 0.9, 0.2, 0.9, 0.5, 0.7, 0.1, 0.7]),
    "perfect": ([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9]),
    "no-positive-prediction": ([0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3]),
}


@pytest.mark.parametrize("case", CASES)
def test_against_sklearn(case: str) -> None:
    labels, scores = (np.array(v) for v in CASES[case])
    got = classification_metrics(torch.tensor(scores), torch.tensor(labels))
    predictions = (scores > 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predictions, labels=[0, 1]).ravel()
    assert (got["tn"], got["fp"], got["fn"], got["tp"]) == (tn, fp, fn, tp)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, predictions))
    assert got["precision"] == pytest.approx(skm.precision_score(labels, predictions, zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(labels, predictions, zero_division=0))
    assert got["f1"] == pytest.approx(skm.f1_score(labels, predictions, zero_division=0))
    assert got["auc_roc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert got["average_precision"] == pytest.approx(skm.average_precision_score(labels, scores))


def test_defect_is_the_positive_class() -> None:
    # Two defects, one found: recall 0.5 for the defect class (the study's bug reported the defect-free class).
    got = classification_metrics(torch.tensor([0.9, 0.1, 0.2, 0.3]), torch.tensor([1, 1, 0, 0]))
    assert got["recall"] == 0.5 and got["precision"] == 1.0 and got["tp"] == 1 and got["fn"] == 1


def test_auc_comes_from_scores_not_hard_labels() -> None:
    labels, scores = torch.tensor([0, 0, 1, 1]), torch.tensor([0.1, 0.4, 0.35, 0.45])
    assert binary_auroc(scores, labels) == pytest.approx(0.75)  # hard labels would give 0.5


def test_random_scores_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 500), np.round(rng.random(500), 2)
    assert binary_auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(skm.roc_auc_score(labels, scores))
    assert average_precision(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(skm.average_precision_score(labels, scores))


def test_one_class_absent_gives_nan_and_a_message_not_a_crash() -> None:
    labels = torch.zeros(6, dtype=torch.long)
    got = classification_metrics(torch.linspace(0, 1, 6), labels)
    assert math.isnan(got["auc_roc"]) and math.isnan(got["average_precision"])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels.numpy(), (np.linspace(0, 1, 6) > 0.5).astype(int)))
    assert "no defective image" in undefined_metrics_note(labels)
    assert "no defect-free image" in undefined_metrics_note(torch.ones(3, dtype=torch.long))
    assert undefined_metrics_note(torch.tensor([0, 1])) is None
