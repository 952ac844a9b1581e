"""The reference study's numbers, quoted (not measured), to print beside ours."""

from __future__ import annotations

# Localization mIoU on DAGM as the talk reports it (percent). SegNet and RefineNet are fully supervised.
QUOTED_LOCALIZATION = [
    {"method": "SegNet (fully supervised)", "miou_percent": 21.95, "source": "quoted from the reference talk"},
    {"method": "RefineNet (fully supervised)", "miou_percent": 32.90, "source": "quoted from the reference talk"},
    {"method": "LayerCAM", "miou_percent": 27.26, "source": "quoted from the reference talk"},
]
