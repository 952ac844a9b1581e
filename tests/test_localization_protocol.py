"""The protocol per entry: gates, all-mIoU and image false alarms, intervals, rows, and test that cannot steer."""

from __future__ import annotations

import math

import pytest
import torch

from defectcam.localization import CURVE_KEYS, ROW_KEYS, Part, Protocol, evaluate_entry
from defectcam.localization.bootstrap import bootstrap_interval, bootstrap_means
from defectcam.localization.protocol import scores_at

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(seed: int, n: int = 10, size: int = 24, n_free: int = 3) -> Part:
    """Noisy maps peaking on rectangular defects; the last n_free images are defect-free; the classifier is perfect."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n - n_free):
        y, x = (int(v) for v in torch.randint(2, size - 10, (2,), generator=g))
        masks[i, y : y + 6, x : x + 8] = True
    maps = 0.6 * torch.rand(n, size, size, generator=g) + 0.5 * masks
    maps = maps / maps.flatten(1).amax(1).view(n, 1, 1)
    defective = masks.flatten(1).any(1)
    return Part(maps, masks, defective, defective.clone())


def row(result, split="test", selection="val-best", gate="none", postprocess="none", threshold=None):
    return next(r for r in result.rows if (r["split"], r["selection"], r["gate"], r["postprocess"]) == (split, selection, gate, postprocess)
                and (threshold is None or r["threshold"] == threshold))


def test_defect_free_image_under_each_gate() -> None:
    """One defective and one defect-free image; the map flags pixels on both."""
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 2:4, 2:4] = True
    maps = torch.zeros(2, 8, 8)
    maps[0, 2:4, 2:4] = 1.0
    maps[1, 5, 5] = 1.0  # a false alarm of one pixel on the defect-free image
    defective = torch.tensor([True, False])
    flagged = Part(maps, masks, defective, predicted=torch.tensor([True, True]))
    silent = Part(maps, masks, defective, predicted=torch.tensor([True, False]))
    for part, gate, expected_all, expected_alarm in ((flagged, "none", 0.5, 1.0), (flagged, "classifier", 0.5, 1.0),
                                                     (silent, "none", 0.5, 1.0), (silent, "classifier", 1.0, 0.0)):
        curves = scores_at(part, torch.tensor([0.5]), "none", [gate])[gate]
        assert curves.miou[0].item() == 1.0  # the defect is found exactly
        assert curves.all_miou[0].item() == expected_all  # defect-free: 1 if nothing predicted, else 0
        assert curves.image_false_alarm[0].item() == expected_alarm
        assert curves.false_alarm[0].item() == pytest.approx(expected_alarm / 64)


def test_classifier_gate_scores_a_missed_defect_zero() -> None:
    part = blobs(0)
    missed = Part(part.maps, part.masks, part.defective, part.predicted & (torch.arange(10) != 0))
    none = scores_at(missed, torch.tensor([0.6]), "none", ["none", "classifier"])
    assert none["classifier"].iou[0, 0].item() == 0.0 < none["none"].iou[0, 0].item()
    assert none["classifier"].miou[0].item() == pytest.approx(none["none"].miou[0].item() - none["none"].iou[0, 0].item() / 7)


def test_one_pixel_mask_is_scored_exactly() -> None:
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 17, 9] = True
    maps = torch.zeros(2, 32, 32)
    maps[0, 17, 9] = 1.0
    maps[0, 17, 10] = 0.5
    part = Part(maps, masks, torch.tensor([True, False]), torch.tensor([True, False]))
    curves = scores_at(part, torch.tensor([0.75, 0.25]), "none", ["none"])["none"]
    assert curves.iou[:, 0].tolist() == [1.0, 0.5]


@pytest.mark.parametrize("kind", ["nan", "constant", "random", "inverted"])
def test_test_split_cannot_influence_any_threshold(kind: str) -> None:
    val, test = blobs(1), blobs(2)
    garbage = {"nan": torch.full_like(test.maps, math.nan), "constant": torch.full_like(test.maps, 0.37),
               "random": torch.rand(test.maps.shape, generator=torch.Generator().manual_seed(9)), "inverted": 1 - test.maps}[kind]
    protocol = Protocol(postprocesses=("none", "ellipse"), bootstrap=20, pixel_metrics=kind != "nan")
    clean = evaluate_entry(val, test, protocol)
    dirty = evaluate_entry(val, Part(garbage, test.masks, test.defective, test.predicted), protocol)
    assert [r for r in clean.rows if r["split"] == "val"] == [r for r in dirty.rows if r["split"] == "val"]
    assert [r["threshold"] for r in clean.rows] == [r["threshold"] for r in dirty.rows]


def test_rows_curves_and_intervals() -> None:
    val, test = blobs(3), blobs(4)
    result = evaluate_entry(val, test, Protocol(gates=("none", "classifier"), postprocesses=("none", "ellipse"), bootstrap=200))
    keys = [(r["postprocess"], r["gate"], r["split"], r["selection"], r["threshold"]) for r in result.rows]
    assert len(keys) == 2 * 2 * 3 * 2 and all(tuple(r) == ROW_KEYS for r in result.rows)
    assert [k[4] for k in keys if k[3] == "fixed"][:4] == [0.5, 0.5, 0.15, 0.15]
    for r in result.rows:
        for key in ("miou", "all_miou", "dataset_iou", "two_class_miou", "false_alarm", "image_false_alarm"):
            assert 0.0 <= r[key] <= 1.0
        assert (r["n_defective"], r["n_defect_free"]) == (7, 3)
        if r["split"] == "test":
            assert r["miou_ci_low"] <= r["miou"] <= r["miou_ci_high"] and r["all_miou_ci_low"] <= r["all_miou"] <= r["all_miou_ci_high"]
        else:
            assert math.isnan(r["miou_ci_low"]) and math.isnan(r["all_miou_ci_high"])
        assert math.isnan(r["pixel_auroc"]) == (r["split"] == "val" or r["postprocess"] == "ellipse")
    assert all(tuple(c) == CURVE_KEYS for c in result.curves)
    assert {(c["split"], c["postprocess"]) for c in result.curves} == {("val", "none"), ("test", "none"), ("val", "ellipse")}
    # per-image test scores at the val-best thresholds: their means are the rows' scores
    images = [i for i in result.images if i["gate"] == "none" and i["postprocess"] == "none"]
    best = row(result)
    assert sum(i["iou"] for i in images if i["defective"]) / 7 == pytest.approx(best["miou"])
    assert sum(i["all_iou"] for i in images) / 10 == pytest.approx(best["all_miou"])


def test_curves_resolve_thresholds_below_the_grid() -> None:
    val = blobs(5)
    small = Part(val.maps * 0.004, val.masks, val.defective, val.predicted)  # every value below 0.01
    result = evaluate_entry(small, blobs(6), Protocol(gates=("none",), bootstrap=10))
    low = [c["threshold"] for c in result.curves if c["split"] == "val" and 0 < c["threshold"] < 0.004]
    assert len(low) > 100  # quantiles of the validation values, not only the 0.01 grid steps


def test_bootstrap_is_seeded_and_stratified() -> None:
    values = torch.tensor([0.0, 1.0] * 20, dtype=torch.float64)
    low, high = bootstrap_interval(values, 2000, seed=1)
    assert low < 0.5 < high and (low, high) == bootstrap_interval(values, 2000, seed=1)
    assert high - low > bootstrap_interval(values.repeat(25), 2000, seed=1)[1] - bootstrap_interval(values.repeat(25), 2000, seed=1)[0]
    # strata keep each group's weight: a mean of group means, whatever their sizes
    grouped = torch.tensor([1.0] * 3 + [0.0] * 30, dtype=torch.float64)
    strata = torch.tensor([0] * 3 + [1] * 30)
    assert torch.allclose(bootstrap_means(grouped, 100, 0, strata), torch.full((100,), 0.5, dtype=torch.float64))
    assert all(math.isnan(v) for v in bootstrap_interval(torch.zeros(0), 10))
