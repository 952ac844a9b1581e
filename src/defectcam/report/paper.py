"""The reference study's numbers, quoted (not measured), to print beside ours."""

from __future__ import annotations

# Localization mIoU on DAGM as the talk reports it (21.95 % etc.), stored as fractions like every CSV score.
# SegNet and RefineNet are fully supervised.
QUOTED_LOCALIZATION = [
    {"method": "SegNet (fully supervised)", "miou": 0.2195, "source": "quoted from the reference talk, not measured"},
    {"method": "RefineNet (fully supervised)", "miou": 0.3290, "source": "quoted from the reference talk, not measured"},
    {"method": "LayerCAM", "miou": 0.2726, "source": "quoted from the reference talk, not measured"},
]
