"""The protocol for one scored entry (a method at a layer, a fusion or a baseline).

For every gate (``none``; ``classifier``: nothing predicted where the classifier says
defect-free) and every post-process (``none``; ``ellipse``), the threshold is chosen on the
validation split alone, by ``select_on`` (``miou`` or ``all_miou``), and only then is the test
split read. Without post-process the choice is exact over every distinct validation value
(``exact.py``); the ellipse post-process is not monotone in the threshold, so it is searched
over candidates where the validation maps live (quantiles of their pooled values and the uniform
grid), refined around the best. Test rows carry 95 % bootstrap intervals over images.

Rows come per (postprocess, gate): the val-best threshold, then each fixed threshold, each as a
test row then a validation row. Curves: every score at the candidate thresholds (validation and
test without post-process; validation only for the ellipse, whose every point costs a labelling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from defectcam.localization.bootstrap import bootstrap_interval
from defectcam.localization.ellipse import ellipse_counts
from defectcam.localization.exact import best_exact_threshold, sort_pixels
from defectcam.localization.iou import confusion_curve
from defectcam.localization.pixel_scores import pixel_scores
from defectcam.localization.selection import (
    CURVE_SCORES,
    GATES,
    POSTPROCESSES,
    SELECT_ON,
    SplitCurves,
    curves_from_counts,
    default_thresholds,
)

ROW_KEYS = (
    "split", "selection", "gate", "postprocess", "select_on", "threshold", "miou", "miou_ci_low", "miou_ci_high",
    "all_miou", "all_miou_ci_low", "all_miou_ci_high", "dataset_iou", "two_class_miou", "false_alarm",
    "image_false_alarm", "pixel_auroc", "pxap", "n_defective", "n_defect_free",
)
CURVE_KEYS = ("split", "gate", "postprocess", "threshold", *CURVE_SCORES)
QUANTILES = 128  # candidate thresholds drawn from the pooled validation values
ELLIPSE_COARSE = 16  # ellipse search: candidates tried first, then ELLIPSE_REFINE between the best's neighbours
ELLIPSE_REFINE = 6
_QUANTILE_SAMPLE = 1 << 20  # pixels drawn (evenly) to estimate the quantiles


@dataclass(frozen=True)
class Part:
    """One split of one entry: scoring maps at the masks' size, masks, labels, classifier decisions."""

    maps: Tensor  # (N, H, W) float in [0, 1]
    masks: Tensor  # (N, H, W) bool
    defective: Tensor  # (N,) bool, from the labels
    predicted: Tensor  # (N,) bool, the classifier says "defect"

    def keep(self, gate: str) -> Tensor | None:
        """The images whose prediction a gate keeps (None: all)."""
        if gate == "none":
            return None
        if gate == "classifier":
            return self.predicted.to(torch.bool)
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")


@dataclass(frozen=True)
class Protocol:
    """What the protocol does for every entry."""

    gates: Sequence[str] = GATES
    postprocesses: Sequence[str] = ("none",)
    select_on: str = "miou"
    n_thresholds: int = 101
    fixed_thresholds: Sequence[float] = (0.5, 0.15)
    bootstrap: int = 1000
    seed: int = 0
    pixel_metrics: bool = True

    def __post_init__(self) -> None:
        for name, values, choices in (("gates", self.gates, GATES), ("postprocesses", self.postprocesses, POSTPROCESSES),
                                      ("select_on", [self.select_on], SELECT_ON)):
            unknown = [v for v in values if v not in choices]
            if unknown or not values:
                raise ValueError(f"{name}: {list(values)} must be a non-empty subset of {choices}")


@dataclass
class EntryResult:
    """Rows and curves of one entry, and the per-image test scores at each val-best threshold."""

    rows: list[dict[str, object]] = field(default_factory=list)
    curves: list[dict[str, object]] = field(default_factory=list)
    images: list[dict[str, object]] = field(default_factory=list)  # gate, postprocess, index, iou, all_iou


def candidate_thresholds(val_maps: Tensor, n_thresholds: int, fixed: Sequence[float], quantiles: int = QUANTILES) -> Tensor:
    """Sorted distinct float64 candidates: the uniform grid, the fixed thresholds and quantiles of the
    pooled validation values (so the curves also resolve where the maps live, e.g. below 0.01)."""
    values = val_maps.detach().reshape(-1).float()
    values = values[torch.isfinite(values)]
    step = max(1, values.numel() // _QUANTILE_SAMPLE)
    levels = torch.linspace(0, 1, quantiles, dtype=torch.float64)
    pooled = torch.quantile(values[::step].cpu().double(), levels) if values.numel() else levels[:0]
    grid = default_thresholds(n_thresholds)
    fixed_t = torch.tensor(list(fixed), dtype=torch.float64)
    # Cast through float32: a float32 map value compares exactly against its own float32 threshold.
    return torch.unique(torch.cat([grid, fixed_t, pooled.float().double()]))


def _curves(part: Part, counts: tuple[Tensor, Tensor, Tensor], thresholds: Tensor, gate: str, split: str) -> SplitCurves:
    n_pixels = part.maps.shape[1] * part.maps.shape[2]
    return curves_from_counts(*counts, part.defective, thresholds, n_pixels, part.keep(gate), split)


def _best(curves: SplitCurves, select_on: str) -> int:
    """Index of the best threshold on `select_on`; ties go to the lowest threshold."""
    score = getattr(curves, select_on).cpu()  # thresholds live on the CPU
    tied = torch.nonzero(score >= score.max() - 1e-12).reshape(-1)
    return int(tied[curves.thresholds[tied].argmin()])


def _row(curves: SplitCurves, i: int, split: str, selection: str, gate: str, postprocess: str, protocol: Protocol) -> dict[str, object]:
    n_defective = int(curves.defective.sum())
    row: dict[str, object] = {
        "split": split, "selection": selection, "gate": gate, "postprocess": postprocess, "select_on": protocol.select_on,
        "threshold": float(curves.thresholds[i]), "miou": float(curves.miou[i]), "miou_ci_low": math.nan,
        "miou_ci_high": math.nan, "all_miou": float(curves.all_miou[i]), "all_miou_ci_low": math.nan,
        "all_miou_ci_high": math.nan, "dataset_iou": float(curves.dataset_iou[i]),
        "two_class_miou": float(curves.two_class_miou[i]), "false_alarm": float(curves.false_alarm[i]),
        "image_false_alarm": float(curves.image_false_alarm[i]), "pixel_auroc": math.nan, "pxap": math.nan,
        "n_defective": n_defective, "n_defect_free": int(curves.defective.numel()) - n_defective,
    }
    if split == "test":
        iou, all_iou = curves.iou[i], curves.all_iou[i]
        row["miou_ci_low"], row["miou_ci_high"] = bootstrap_interval(iou[curves.defective], protocol.bootstrap, protocol.seed)
        row["all_miou_ci_low"], row["all_miou_ci_high"] = bootstrap_interval(all_iou, protocol.bootstrap, protocol.seed)
    return row


def _curve_rows(curves: SplitCurves, split: str, gate: str, postprocess: str) -> list[dict[str, object]]:
    columns = {k: getattr(curves, k).tolist() for k in CURVE_SCORES}
    return [{"split": split, "gate": gate, "postprocess": postprocess, "threshold": t, **{k: v[i] for k, v in columns.items()}}
            for i, t in enumerate(curves.thresholds.tolist())]


def _pixel_scores(part: Part, gate: str) -> tuple[float, float]:
    """Pixel AUROC and PxAP over the defective images; a gate ranks the pixels it rejects below all others."""
    defective = part.defective.to(part.maps.device)
    maps, masks = part.maps[defective], part.masks[defective]
    keep = part.keep(gate)
    if keep is not None:
        maps = maps.masked_fill(~keep.to(maps.device)[defective][:, None, None], -math.inf)
    return tuple(float(v) for v in pixel_scores(maps, masks))  # type: ignore[return-value]


def _report(result: EntryResult, val: SplitCurves, test: SplitCurves, chosen: int, fixed_index: list[int],
            gate: str, postprocess: str, protocol: Protocol, pixel: tuple[float, float]) -> None:
    """Append the rows of one (gate, post-process): val-best then fixed, test row before validation row."""
    selections = [("val-best", chosen), *(("fixed", i) for i in fixed_index)]
    for selection, i in selections:
        test_row = _row(test, i, "test", selection, gate, postprocess, protocol)
        test_row["pixel_auroc"], test_row["pxap"] = pixel
        result.rows += [test_row, _row(val, i, "val", selection, gate, postprocess, protocol)]
    result.images += [{"gate": gate, "postprocess": postprocess, "index": n, "defective": bool(test.defective[n]),
                       "iou": float(test.iou[chosen, n]), "all_iou": float(test.all_iou[chosen, n])}
                      for n in range(test.defective.numel())]


def _plain(result: EntryResult, val: Part, test: Part, protocol: Protocol, candidates: Tensor) -> None:
    """No post-process: exact threshold choice per gate, then one counting pass per split."""
    pixels = sort_pixels(val.maps, val.masks, val.defective)
    chosen = [best_exact_threshold(pixels, val.keep(gate), protocol.select_on)[0] for gate in protocol.gates]
    fixed = list(protocol.fixed_thresholds)
    thresholds = torch.tensor(chosen + fixed, dtype=torch.float64)
    everything = torch.cat([thresholds, candidates])
    val_counts = confusion_curve(val.maps, val.masks, everything)
    test_counts = confusion_curve(test.maps, test.masks, everything)
    n_rows, n_fixed = len(thresholds), len(fixed)
    for g, gate in enumerate(protocol.gates):
        val_curves = _curves(val, val_counts, everything, gate, "validation")
        test_curves = _curves(test, test_counts, everything, gate, "test")
        pixel = _pixel_scores(test, gate) if protocol.pixel_metrics else (math.nan, math.nan)
        fixed_index = list(range(len(chosen), len(chosen) + n_fixed))
        _report(result, val_curves, test_curves, g, fixed_index, gate, "none", protocol, pixel)
        keep_curve = slice(n_rows, None)
        for split, curves in (("val", val_curves), ("test", test_curves)):
            result.curves += _curve_rows(_slice(curves, keep_curve), split, gate, "none")


def _slice(curves: SplitCurves, index: slice) -> SplitCurves:
    """The curves at a slice of their thresholds."""
    return SplitCurves(**{k: (v[index] if k not in ("defective",) else v) for k, v in vars(curves).items()})


def _ellipse(result: EntryResult, val: Part, test: Part, protocol: Protocol, candidates: Tensor) -> None:
    """Ellipse post-process: coarse-to-fine search of the validation threshold per gate (each point is a labelling)."""
    fixed = torch.tensor(list(protocol.fixed_thresholds), dtype=torch.float64)
    pick = torch.linspace(0, len(candidates) - 1, min(ELLIPSE_COARSE, len(candidates))).round().long().unique()
    tried = torch.unique(torch.cat([candidates[pick], fixed]))
    counts = ellipse_counts(val.maps, val.masks, tried)
    for gate in protocol.gates:  # refine between the neighbours of this gate's best coarse threshold
        best = _best(_curves(val, counts, tried, gate, "validation"), protocol.select_on)
        low, high = tried[max(best - 1, 0)], tried[min(best + 1, len(tried) - 1)]
        fine = torch.linspace(float(low), float(high), ELLIPSE_REFINE + 2, dtype=torch.float64)[1:-1].float().double()
        fine = fine[~torch.isin(fine, tried)]
        if len(fine):
            extra = ellipse_counts(val.maps, val.masks, fine)
            order = torch.argsort(torch.cat([tried, fine]))
            tried = torch.cat([tried, fine])[order]
            counts = tuple(torch.cat([a, b])[order] for a, b in zip(counts, extra))  # type: ignore[assignment]
    searched = {gate: _curves(val, counts, tried, gate, "validation") for gate in protocol.gates}
    chosen = [float(tried[_best(searched[gate], protocol.select_on)]) for gate in protocol.gates]
    # Thresholds are fixed from here on; the test split is read only below, once per distinct threshold.
    thresholds = torch.tensor(chosen + fixed.tolist(), dtype=torch.float64)
    distinct, position = torch.unique(thresholds, return_inverse=True)
    test_counts = tuple(c[position] for c in ellipse_counts(test.maps, test.masks, distinct))
    val_counts = tuple(c[torch.searchsorted(tried, thresholds)] for c in counts)  # every one was tried
    fixed_index = list(range(len(chosen), len(thresholds)))
    for g, gate in enumerate(protocol.gates):
        val_rows = _curves(val, val_counts, thresholds, gate, "validation")  # type: ignore[arg-type]
        test_rows = _curves(test, test_counts, thresholds, gate, "test")  # type: ignore[arg-type]
        # A binary ellipse has no ranking: threshold-free pixel scores stay NaN for these rows.
        _report(result, val_rows, test_rows, g, fixed_index, gate, "ellipse", protocol, (math.nan, math.nan))
        result.curves += _curve_rows(searched[gate], "val", gate, "ellipse")


def scores_at(part: Part, thresholds: Tensor, postprocess: str, gates: Sequence[str]) -> dict[str, SplitCurves]:
    """Every score of one split at given thresholds (no selection), per gate: what a threshold sweep reports."""
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64)
    if postprocess == "none":
        counts = confusion_curve(part.maps, part.masks, thresholds)
    elif postprocess == "ellipse":
        counts = ellipse_counts(part.maps, part.masks, thresholds)
    else:
        raise ValueError(f"postprocess must be one of {POSTPROCESSES}, got {postprocess!r}")
    return {gate: _curves(part, counts, thresholds, gate, "split") for gate in gates}


def evaluate_entry(val: Part, test: Part, protocol: Protocol = Protocol()) -> EntryResult:
    """Rows, curves and per-image test scores of one entry under every gate and post-process.

    The validation split alone decides every threshold; the test split is read after.
    """
    candidates = candidate_thresholds(val.maps, protocol.n_thresholds, protocol.fixed_thresholds)
    result = EntryResult()
    if "none" in protocol.postprocesses:
        _plain(result, val, test, protocol, candidates)
    if "ellipse" in protocol.postprocesses:
        _ellipse(result, val, test, protocol, candidates)
    return result
