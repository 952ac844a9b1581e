"""Classification metrics (defect = positive) against scikit-learn on hand-made cases; ranking by logit margins."""

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
    logit_margin,
    undefined_metrics_note,
)
from defectcam.models.module import epoch_metrics
from defectcam.stages.evaluate import prediction_table

CASES = {
    "mixed": ([0, 0, 1, 1, 0, 1, 0, 0], [0.1, 0.6, 0.8, 0.4, 0.2, 0.9, 0.5, 0.3]),
    "ties": ([0, 1, 0, 1, 1, 0, 0, 1, 0, 0], [0.5, 0.5, 0.2, 0.9, 0.2, 0.9, 0.5, 0.7, 0.1, 0.7]),
    "perfect": ([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9]),
    "no-positive-prediction": ([0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3]),
}


@pytest.mark.parametrize("case", CASES)
def test_against_sklearn(case: str) -> None:
    labels, scores = (np.array(v) for v in CASES[case])
    # As margins: score - 0.5 ranks like the score and is > 0 exactly where the score is > 0.5.
    got = classification_metrics(torch.tensor(scores) - 0.5, torch.tensor(labels))
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
    got = classification_metrics(torch.tensor([2.0, -2.0, -1.5, -1.0]), torch.tensor([1, 1, 0, 0]))
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
    got = classification_metrics(torch.linspace(-1, 1, 6), labels)
    assert math.isnan(got["auc_roc"]) and math.isnan(got["average_precision"])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels.numpy(), (np.linspace(-1, 1, 6) > 0).astype(int)))
    assert "no defective image" in undefined_metrics_note(labels)
    assert "no defect-free image" in undefined_metrics_note(torch.ones(3, dtype=torch.long))
    assert undefined_metrics_note(torch.tensor([0, 1])) is None


# Logits whose softmax saturates in float32: p_defect is exactly 1.0 for all four images, yet the two
# defects have the larger margins. A confident error (margin 18) must rank below confident hits (30, 45).
SATURATED_LOGITS = torch.tensor([[0.0, 18.0], [0.0, 25.0], [-5.0, 25.0], [0.0, 45.0], [3.0, -4.0]])
SATURATED_LABELS = torch.tensor([0, 0, 1, 1, 0])


def test_softmax_saturates_where_margins_still_rank() -> None:
    p_defect = SATURATED_LOGITS.softmax(1)[:, 1]
    assert (p_defect[:4] == 1.0).all()  # the float32 saturation this guards against
    margins = logit_margin(SATURATED_LOGITS)
    assert margins.tolist() == [18.0, 25.0, 30.0, 45.0, -7.0]
    got = classification_metrics(margins, SATURATED_LABELS)
    assert got["auc_roc"] == 1.0 and got["average_precision"] == 1.0
    assert got["auc_roc"] == pytest.approx(skm.roc_auc_score(SATURATED_LABELS.numpy(), margins.numpy()))
    assert binary_auroc(p_defect, SATURATED_LABELS) < 0.9  # probabilities would tie the error with the hits
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (2, 2, 1, 0)  # decisions stay the argmax


def test_margin_ties_go_to_defect_free_like_argmax() -> None:
    logits = torch.tensor([[1.0, 1.0], [0.0, 1e-6], [2.0, 1.0]])
    got = classification_metrics(logit_margin(logits), torch.tensor([0, 1, 0]))
    assert (got["tn"], got["tp"]) == (2, 1) and got["accuracy"] == 1.0
    assert logits.argmax(1).tolist() == [0, 1, 0]


def test_logit_margin_needs_two_logits() -> None:
    with pytest.raises(ValueError, match="logit_margin needs"):
        logit_margin(torch.zeros(4, 3))


def test_validation_auc_ranks_by_margin() -> None:
    loss = torch.zeros(len(SATURATED_LABELS))
    got = epoch_metrics(loss, logit_margin(SATURATED_LOGITS), SATURATED_LABELS)
    assert got["auc"] == 1.0 and got["acc"] == pytest.approx(3 / 5)
    assert math.isnan(epoch_metrics(loss[:2], logit_margin(SATURATED_LOGITS[:2]), SATURATED_LABELS[:2])["auc"])


def test_predictions_keep_p_defect_and_add_the_margin() -> None:
    margins = logit_margin(SATURATED_LOGITS)
    table = prediction_table([f"i{k}" for k in range(5)], SATURATED_LABELS, SATURATED_LOGITS.softmax(1)[:, 1], margins)
    assert list(table.columns) == ["image_id", "label", "p_defect", "logit_margin", "pred", "pred_argmax"]
    assert table["logit_margin"].tolist() == margins.tolist() and table["pred"].tolist() == [1, 1, 1, 1, 0]
