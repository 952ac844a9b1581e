"""The classifier's decision threshold chosen on validation: brute force and sklearn as oracles, the rule's
tie-breaks, and evaluate/localize using it (the argmax decision kept as *_argmax columns)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from defectcam.errors import ConfigError
from defectcam.evaluation.classification import classification_metrics, predict
from defectcam.evaluation.decision import best_cut, decision_rule, decision_threshold
from defectcam.stages.evaluate import argmax_columns, prediction_table


def balanced_accuracy(margin: torch.Tensor, labels: torch.Tensor, threshold: float) -> float:
    return skm.balanced_accuracy_score(labels.numpy(), predict(margin, threshold).numpy())


def test_perfect_ranking_on_the_wrong_side_of_zero_is_moved_to_the_gap() -> None:
    # The quick run's failure in small: every validation image ranks right, but the defect-free ones have
    # positive margins, so the argmax calls them defective.
    val_margin = torch.tensor([0.3, 0.5, 1.0, 1.2, 1.5, 1.8, 2.0, -1.0, 4.0, 5.0])
    val_labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    threshold = decision_threshold(val_margin, val_labels)
    assert threshold == pytest.approx(3.0)  # the midpoint of the gap between the classes (2.0, 4.0)
    test_margin, test_labels = torch.tensor([0.7, 1.2, 2.5, 3.5, 4.5, 6.0]), torch.tensor([0, 0, 0, 1, 1, 1])
    assert classification_metrics(test_margin, test_labels, threshold)["accuracy"] == 1.0
    assert classification_metrics(test_margin, test_labels)["accuracy"] == 0.5  # argmax: 3 false alarms
    assert argmax_columns(test_margin, test_labels)["fp_argmax"] == 3


@pytest.mark.parametrize("seed", range(20))
def test_the_chosen_threshold_reaches_the_best_balanced_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 60))
    labels = torch.as_tensor(rng.integers(0, 2, n))
    labels[:2] = torch.tensor([0, 1])
    margin = torch.as_tensor(np.round(rng.normal(0.5, 2.0, n) + 1.5 * labels.numpy(), int(rng.integers(0, 3))))  # ties too
    threshold = best_cut(margin, labels)
    values = np.unique(margin.numpy())
    candidates = [values[0] - 1.0, *values]  # every distinct decision: margin > each value, and all defective
    best = max(balanced_accuracy(margin, labels, t) for t in candidates)
    assert balanced_accuracy(margin, labels, threshold) == pytest.approx(best)


def test_zero_stays_when_validation_cannot_fault_the_argmax() -> None:
    margin, labels = torch.tensor([-3.0, -1.0, 2.0, 5.0]), torch.tensor([0, 0, 1, 1])
    assert decision_threshold(margin, labels) == 0.0


@pytest.mark.parametrize(("margin", "expected"), [([-3.0, -1.0, 2.0, 5.0], -2.0), ([-5.0, -4.0, 0.5, 5.0], 2.75)])
def test_of_tied_cuts_the_one_nearest_zero_wins(margin: list[float], expected: float) -> None:
    # Labels 0, 1, 0, 1 in margin order: the cuts in the first gap and in the last gap both score balanced
    # accuracy 0.75; the one whose gap lies nearer 0 is kept, at its midpoint.
    labels = torch.tensor([0, 1, 0, 1])
    assert best_cut(torch.tensor(margin), labels) == pytest.approx(expected)
    assert balanced_accuracy(torch.tensor(margin), labels, expected) == pytest.approx(0.75)


def test_without_both_classes_the_argmax_stays() -> None:
    assert decision_threshold(torch.tensor([1.0, 2.0]), torch.tensor([0, 0])) == 0.0
    assert decision_threshold(torch.tensor([-1.0, -2.0]), torch.tensor([1, 1])) == 0.0


def test_an_inverted_ranking_gives_the_nearest_extreme_cut() -> None:
    # All defect-free images above all defects (a flipped model): calling everything one class is the best cut
    # (balanced accuracy 0.5), never a cut inside the flipped ranking; of the two, the one nearer 0.
    margin, labels = torch.tensor([-2.0, -1.0, 3.0, 4.0]), torch.tensor([1, 1, 0, 0])
    assert best_cut(margin, labels) == -3.0  # everything defective: below the lowest margin
    assert decision_threshold(margin, labels) == 0.0  # 2 images fixed, none broken: within chance, the argmax stays


@pytest.mark.parametrize(("margin", "labels"), [([0.0, 0.0, 0.0], [0, 1, 1]), ([-1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])])
def test_margins_of_exactly_zero_keep_the_argmax_where_it_ties(margin: list[float], labels: list[int]) -> None:
    # bf16 logits give exact zeros: a cut just below 0 is another decision than the argmax and must not win a tie.
    assert decision_threshold(torch.tensor(margin), torch.tensor(labels)) == 0.0


def test_a_noise_level_cut_keeps_the_argmax_and_a_clear_one_moves() -> None:
    # Problem 1, seed 1 of the quick run, in small: the best balanced-accuracy cut trades one missed defect for
    # two false alarms (b = 1, c = 2): the argmax stays.
    margin = torch.tensor([-8.0] * 23 + [-4.46, -4.45, -4.37, -2.18, -0.99] + [-4.04, 0.6, 8.27] + [9.0] * 9)
    labels = torch.tensor([0] * 28 + [1] * 12)  # the quick run's validation part: 28 defect-free, 12 defective
    assert best_cut(margin, labels) < -4.04 and decision_threshold(margin, labels) == 0.0
    # Nine defect-free images above 0, every defect above them: b = 9, c = 0, far beyond chance.
    margin = torch.tensor([0.1 * k for k in range(1, 10)] + [-3.0, -2.0, 2.0, 3.0])
    labels = torch.tensor([0] * 11 + [1, 1])
    assert decision_threshold(margin, labels) == pytest.approx(1.45)
    # The z of the test is the only knob: 0 takes any cut that wins on validation.
    assert decision_threshold(torch.tensor([-2.0, -1.0, 3.0, 4.0]), torch.tensor([1, 1, 0, 0]), z=0.0) == -3.0


def test_the_prediction_table_keeps_both_decisions() -> None:
    margin = torch.tensor([0.5, 3.5])
    table = prediction_table(["a", "b"], torch.tensor([0, 1]), margin.sigmoid(), margin, threshold=3.0)
    assert table["pred"].tolist() == [0, 1] and table["pred_argmax"].tolist() == [1, 1]


def test_an_unknown_decision_rule_is_a_config_error() -> None:
    assert decision_rule("argmax") == "argmax"
    with pytest.raises(ConfigError, match="evaluate.decision: 'youden'"):
        decision_rule("youden")
