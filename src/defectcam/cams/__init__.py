"""CAM engine: pure torch, no Hydra, no Lightning.

``compute_cams`` runs one forward and one backward pass for any set of methods x layers;
``scoring_maps`` turns raw maps into [0, 1] maps at the mask size; ``fuse_*`` combine layers.
"""

from defectcam.cams.extractor import CamResult, compute_cams, extract_cams
from defectcam.cams.fusion import fuse_layercam, fuse_multiplicative
from defectcam.cams.methods import METHODS
from defectcam.cams.normalize import scoring_maps
from defectcam.cams.tta import TTA_SETS, tta_cams

__all__ = [
    "METHODS",
    "TTA_SETS",
    "CamResult",
    "compute_cams",
    "extract_cams",
    "fuse_layercam",
    "fuse_multiplicative",
    "scoring_maps",
    "tta_cams",
]
