"""Localization scores of scoring maps: threshold sweeps, IoU, pixel AUROC/PxAP, baselines, protocol.

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
from defectcam.localization.selection import (
    CURVE_KEYS,
    ROW_KEYS,
    LocalizationResult,
    SplitCurves,
    default_thresholds,
    evaluate_localization,
    miou,
    select_threshold,
    split_curves,
)

__all__ = [
    "BASELINES",
    "CURVE_KEYS",
    "ROW_KEYS",
    "LocalizationResult",
    "PixelScores",
    "SplitCurves",
    "as_bool_masks",
    "centred_ellipse_maps",
    "confusion_curve",
    "dataset_iou",
    "default_thresholds",
    "evaluate_localization",
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
