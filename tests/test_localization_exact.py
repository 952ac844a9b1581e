"""The exact threshold choice: every distinct validation value, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defectcam.localization import Part, Protocol, default_thresholds, evaluate_entry, iou_curve, miou, select_threshold
from defectcam.localization.exact import best_exact_threshold, exact_curve, score_at_best_threshold, sort_pixels
from defectcam.localization.iou import confusion_curve
from defectcam.localization.selection import curves_from_counts

pytestmark = pytest.mark.usefixtures("one_thread")


def small_split(seed: int, n: int = 8, size: int = 12, n_free: int = 3, levels: int = 40):
    """Quantized noisy maps (many ties) with rectangular defects; the last n_free images are defect-free."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n - n_free):
        y, x = (int(v) for v in torch.randint(0, size - 4, (2,), generator=g))
        masks[i, y : y + 2 + i % 3, x : x + 3] = True
    maps = (0.7 * torch.rand(n, size, size, generator=g) + 0.4 * masks).clamp(0, 1)
    maps = (maps * levels).round() / levels
    maps[0] *= 0.01  # one image whose map lives below the first grid step
    defective = torch.zeros(n, dtype=torch.bool)
    defective[: n - n_free] = True
    predicted = defective.clone()
    predicted[0], predicted[-1] = False, True  # the classifier misses a defect and flags a defect-free image
    return Part(maps, masks, defective, predicted)


def brute_force(part: Part, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every distinct value (and one above all) binarized one by one: thresholds, mIoU, all-mIoU."""
    values = torch.unique(part.maps.double())
    thresholds = torch.cat([values, torch.tensor([float(np.nextafter(np.float32(values.max()), np.float32(2)))], dtype=torch.float64)])
    tp, fp, fn = confusion_curve(part.maps, part.masks, thresholds)
    curves = curves_from_counts(tp, fp, fn, part.defective, thresholds, part.maps[0].numel(), keep)
    return thresholds, curves.miou, curves.all_miou


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gated", [False, True])
def test_exact_curve_equals_brute_force_at_every_candidate(seed: int, gated: bool) -> None:
    part = small_split(seed)
    keep = part.predicted if gated else None
    thresholds, exact_miou, exact_all = exact_curve(sort_pixels(part.maps, part.masks, part.defective), keep)
    tp, fp, fn = confusion_curve(part.maps, part.masks, torch.tensor(thresholds))
    curves = curves_from_counts(tp, fp, fn, part.defective, torch.tensor(thresholds), part.maps[0].numel(), keep)
    assert np.allclose(exact_miou, curves.miou.numpy(), atol=1e-12)
    assert np.allclose(exact_all, curves.all_miou.numpy(), atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("select_on", ["miou", "all_miou"])
def test_chosen_threshold_is_the_best_over_every_distinct_value(seed: int, select_on: str) -> None:
    part = small_split(seed)
    for keep in (None, part.predicted):
        _, brute_miou, brute_all = brute_force(part, keep)
        best = (brute_miou if select_on == "miou" else brute_all).max().item()
        threshold, score = best_exact_threshold(sort_pixels(part.maps, part.masks, part.defective), keep, select_on)
        assert score == pytest.approx(best, abs=1e-12)
        # and that threshold really scores it
        tp, fp, fn = confusion_curve(part.maps, part.masks, torch.tensor([threshold]))
        curves = curves_from_counts(tp, fp, fn, part.defective, torch.tensor([threshold]), part.maps[0].numel(), keep)
        assert getattr(curves, select_on)[0].item() == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("select_on", "report"), [("miou", "all_miou"), ("all_miou", "miou"), ("miou", "miou")])
def test_a_score_is_reported_at_the_threshold_another_chooses(seed: int, select_on: str, report: str) -> None:
    part = small_split(seed)
    pixels = sort_pixels(part.maps, part.masks, part.defective)
    threshold, score = score_at_best_threshold(pixels, None, select_on, report)
    _, brute_miou, brute_all = brute_force(part, None)
    tp, fp, fn = confusion_curve(part.maps, part.masks, torch.tensor([threshold]))
    curves = curves_from_counts(tp, fp, fn, part.defective, torch.tensor([threshold]), part.maps[0].numel())
    best = (brute_miou if select_on == "miou" else brute_all).max().item()
    assert getattr(curves, select_on)[0].item() == pytest.approx(best, abs=1e-12)  # the threshold `select_on` picks
    assert score == pytest.approx(getattr(curves, report)[0].item(), abs=1e-12)  # and `report` read there


def test_all_miou_at_the_miou_threshold_sees_a_flagged_defect_free_image() -> None:
    """The decoder's selection score: a defect-free image lit above the mIoU threshold leaves the mIoU as it was and
    costs the all-mIoU one image in N; lit below it, it costs nothing."""
    part = small_split(5)
    pixels = sort_pixels(part.maps, part.masks, part.defective)
    threshold, miou_before = best_exact_threshold(pixels)
    _, all_before = score_at_best_threshold(pixels, None, "miou", "all_miou")
    free = int(torch.nonzero(~part.defective)[0])
    for value, cost in ((1.0, 1.0 / len(part.maps)), (threshold / 2, 0.0)):
        maps = part.maps.clone()
        maps[free] = torch.where(maps[free] >= threshold, threshold * 0.99, maps[free])  # quiet at the threshold
        quiet = sort_pixels(maps, part.masks, part.defective)
        lit_maps = maps.clone()
        lit_maps[free, 2, 3] = value
        lit = sort_pixels(lit_maps, part.masks, part.defective)
        assert best_exact_threshold(lit)[1] == pytest.approx(best_exact_threshold(quiet)[1], abs=1e-12)
        assert best_exact_threshold(quiet)[1] == pytest.approx(miou_before, abs=1e-12)
        quiet_all = score_at_best_threshold(quiet, None, "miou", "all_miou")[1]
        assert quiet_all >= all_before
        assert score_at_best_threshold(lit, None, "miou", "all_miou")[1] == pytest.approx(quiet_all - cost, abs=1e-12)


def low_threshold_split(seed: int) -> Part:
    """Maps that live below 0.01: defect pixels 0.004-0.009, texture 0-0.003, one bright speck at 1 per image."""
    g = torch.Generator().manual_seed(seed)
    n, size = 6, 16
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:4, 4:9, 5:11] = True
    maps = 0.003 * torch.rand(n, size, size, generator=g) + masks * (0.004 + 0.005 * torch.rand(n, size, size, generator=g))
    maps[:, 0, 0] = 1.0
    defective = masks.flatten(1).any(1)
    return Part(maps, masks, defective, defective)


def test_low_threshold_optimum_is_found_where_the_grid_misses_it() -> None:
    part = low_threshold_split(0)
    threshold, score = best_exact_threshold(sort_pixels(part.maps, part.masks, part.defective))
    assert 0.003 < threshold < 0.01 and score > 0.95
    grid = default_thresholds(101)
    _, grid_score = select_threshold(iou_curve(part.maps, part.masks, grid), part.defective, grid)
    assert grid_score < score - 0.5  # the 101-point grid's first step, 0.01, is above every defect pixel


def test_protocol_rows_reach_the_brute_force_optimum_on_validation() -> None:
    val, test = small_split(11), small_split(12)
    result = evaluate_entry(val, test, Protocol(gates=("none", "classifier"), postprocesses=("none",), bootstrap=50))
    for gate, keep in (("none", None), ("classifier", val.predicted)):
        _, brute_miou, _ = brute_force(val, keep)
        row = next(r for r in result.rows if r["split"] == "val" and r["selection"] == "val-best" and r["gate"] == gate)
        assert row["miou"] == pytest.approx(brute_miou.max().item(), abs=1e-12)
        assert abs(row["miou"] - brute_miou.max().item()) <= 0.005  # the bound, met exactly


def test_all_miou_selection_flags_fewer_defect_free_pixels() -> None:
    val, test = small_split(21), small_split(22)
    by_miou = evaluate_entry(val, test, Protocol(gates=("none",), bootstrap=20))
    by_all = evaluate_entry(val, test, Protocol(gates=("none",), select_on="all_miou", bootstrap=20))
    pick = lambda result: next(r for r in result.rows if r["split"] == "val" and r["selection"] == "val-best")  # noqa: E731
    assert pick(by_all)["all_miou"] >= pick(by_miou)["all_miou"]
    assert pick(by_all)["threshold"] >= pick(by_miou)["threshold"] and pick(by_all)["select_on"] == "all_miou"


def test_miou_definition_is_unchanged_on_defective_images() -> None:
    part = small_split(3)
    grid = default_thresholds(21)
    tp, fp, fn = confusion_curve(part.maps, part.masks, grid)
    curves = curves_from_counts(tp, fp, fn, part.defective, grid, part.maps[0].numel())
    assert torch.allclose(curves.miou, miou(iou_curve(part.maps, part.masks, grid), part.defective))
