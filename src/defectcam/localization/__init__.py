"""Localization scores of scoring maps: threshold sweeps, IoU, pixel AUROC/PxAP, baselines, the protocol.

Pure torch; no Hydra, no Lightning. A prediction at threshold t is ``map >= t`` (float32
comparison; float64 maps compare in float64).
"""

from defectcam.localization.baselines import (
    BASELINES,
    centred_ellipse_maps,
    full_image_maps,
    random_maps,
)
from defectcam.localization.iou import (
    as_bool_masks,
    confusion_curve,
    dataset_iou,
    false_alarm_area,
    iou_curve,
    iou_from_counts,
    two_class_miou,
)
from defectcam.localization.pixel_scores import (
    PixelScores,
    pixel_auroc,
    pixel_average_precision,
    pixel_scores,
)
from defectcam.localization.protocol import (
    CURVE_KEYS,
    ROW_KEYS,
    EntryResult,
    Part,
    Protocol,
    candidate_thresholds,
    evaluate_entry,
)
from defectcam.localization.selection import (
    GATES,
    POSTPROCESSES,
    SELECT_ON,
    SplitCurves,
    curves_from_counts,
    default_thresholds,
    miou,
    select_threshold,
    split_curves,
)

__all__ = [
    "BASELINES",
    "CURVE_KEYS",
    "GATES",
    "POSTPROCESSES",
    "ROW_KEYS",
    "SELECT_ON",
    "EntryResult",
    "Part",
    "PixelScores",
    "Protocol",
    "SplitCurves",
    "as_bool_masks",
    "candidate_thresholds",
    "centred_ellipse_maps",
    "confusion_curve",
    "curves_from_counts",
    "dataset_iou",
    "default_thresholds",
    "evaluate_entry",
    "false_alarm_area",
    "full_image_maps",
    "iou_curve",
    "iou_from_counts",
    "miou",
    "pixel_auroc",
    "pixel_average_precision",
    "pixel_scores",
    "random_maps",
    "select_threshold",
    "split_curves",
    "two_class_miou",
]
