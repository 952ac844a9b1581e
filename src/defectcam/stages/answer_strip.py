"""The report's first picture: the entry validation ranks first (ungated, a CAM entry) on real test images of
its problem: the best, the median and the worst defective image by test IoU, and one defect-free image."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from defectcam.data.prepare import ProblemData
from defectcam.localization.ellipse import ellipse_masks
from defectcam.report.build import entry_name, summary_table

STRIP_FILE = "answer_strip.png"


@dataclass(frozen=True)
class StripEntry:
    """The entry the report's summary names (ungated), its val-chosen threshold and its per-image test IoUs."""

    method: str
    layer: str
    postprocess: str
    threshold: float
    ious: dict[int, float] = field(default_factory=dict)  # test index -> IoU


def chosen_entry(table: pd.DataFrame, images: pd.DataFrame, select_on: str, test_ids: np.ndarray) -> StripEntry | None:
    """The summary's ungated entry chosen on validation by `select_on` (summary_table: the report's own pick), with
    its test IoUs from localization_images; None when no CAM entry has a validation score."""
    summary = summary_table(table)
    if summary.empty:
        return None
    picked = summary[(summary["gate"] == "none") & (summary["chosen_by"] == select_on)]
    if picked.empty:
        return None
    row = picked.iloc[0]
    own = images[(images["method"] == row["method"]) & (images["layer"] == row["layer"]) & (images["gate"] == "none")
                 & (images["postprocess"] == row["postprocess"])]
    index_of = {image_id: i for i, image_id in enumerate(test_ids)}
    ious = {index_of[image_id]: float(iou) for image_id, iou in zip(own["image_id"], own["iou"])}
    return StripEntry(str(row["method"]), str(row["layer"]), str(row["postprocess"]), float(row["threshold"]), ious)


def strip_maps(entries: Iterable[tuple[str, str, torch.Tensor]], entry: StripEntry) -> torch.Tensor:
    """The entry's (N, H, W) scoring maps of one part, from the (method, layer, maps) that localize scores
    (entries_for), so the strip shows exactly the maps the table scored."""
    for method, layer, maps in entries:
        if (method, layer) == (entry.method, entry.layer):
            return maps
    raise ValueError(f"{entry.method} {entry.layer}: not among the scored entries")


def strip_picks(ious: dict[int, float], defective: np.ndarray) -> list[tuple[int, str]]:
    """(test index, label): the best, median and worst defective image by IoU (fewer when fewer exist), then the
    first defect-free one; no image is shown twice."""
    ranked = sorted((i for i in ious if defective[i]), key=lambda i: (-ious[i], i))
    picks: list[tuple[int, str]] = []
    if ranked:
        for index, label in ((ranked[0], "best"), (ranked[len(ranked) // 2], "median"), (ranked[-1], "worst")):
            if index not in (p for p, _ in picks):
                picks.append((index, f"{label}: IoU {ious[index]:.2f}"))
    free = [i for i in range(len(defective)) if not defective[i]]
    if free:
        picks.append((free[0], "defect-free"))
    return picks


def predicted_masks(maps: torch.Tensor, threshold: float, postprocess: str) -> torch.Tensor:
    """(n, H, W) bool: the entry's prediction as the protocol scores it (map >= t, or its moment ellipse)."""
    return ellipse_masks(maps, threshold) if postprocess == "ellipse" else maps >= threshold


def draw_answer_strip(data: ProblemData, chosen: StripEntry, test_maps: torch.Tensor, truth: dict[str, torch.Tensor], out: Path) -> None:
    """figures/answer_strip.png of the chosen entry on the picked test images."""
    from defectcam.report.figures import overlay_strip, save_figure  # matplotlib: 0.8 s of start-up, only to draw

    defective = truth["defective"].cpu().numpy()
    picks = strip_picks(chosen.ious, defective)
    if not picks:
        return
    index = torch.as_tensor([i for i, _ in picks])
    maps = test_maps[index.to(test_maps.device)].float()
    predicted = predicted_masks(maps, chosen.threshold, chosen.postprocess).cpu().numpy()
    gate = truth["predicted"].cpu().numpy()
    labels = []
    for (i, label), mask in zip(picks, predicted):
        if not defective[i]:
            label += f": {'flagged' if mask.any() else 'nothing'} ungated\nclassifier: {'defect' if gate[i] else 'defect-free'}"
        labels.append(label)
    rows = truth["rows"].numpy()[index.numpy()]
    images = np.stack([np.asarray(data.images[int(r)]) for r in rows])
    masks = np.stack([data.mask_of(int(r)) for r in rows])
    title = (f"problem {data.problem}: {entry_name(chosen.method, chosen.layer, chosen.postprocess)} at threshold {chosen.threshold:.3g} "
             f"(chosen on validation), test images; red: prediction, green: ground truth")
    save_figure(overlay_strip(images, masks, maps.cpu().numpy(), predicted, labels, title), out / "figures" / STRIP_FILE)
