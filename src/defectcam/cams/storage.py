"""Raw CAMs stored compactly without losing precision: float16 codes of each map's own range.

Raw maps span many orders of magnitude (an untrained or well-fit model gives ~1e-8, LayerCAM on a
late layer ~1e3). Plain float16 keeps 18 levels of a map near 1e-6 and turns 1e-8 into zeros, so
each map is stored as ``(raw - low) / span`` in float16, with its float32 ``low`` and ``span``:
every map keeps 11 significant bits of its own range, whatever its magnitude. Decoding gives
back float32 raw maps; since upsampling is linear and min-max removes any affine change, their
scoring maps equal those of the original to within ~5e-4.
"""

from __future__ import annotations

import torch
from torch import Tensor


def encode_maps(raw: Tensor) -> dict[str, Tensor]:
    """(N, h, w) float raw maps -> {"codes": float16 (N, h, w) in [0, 1], "low", "span": float32 (N,)}."""
    flat = raw.detach().float().flatten(1)
    low = flat.amin(1)
    span = flat.amax(1) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))  # a flat map stores zeros
    codes = (raw.float() - low[:, None, None]) / safe[:, None, None]
    return {"codes": codes.clamp_(0, 1).to(torch.float16).cpu(), "low": low.cpu(), "span": span.cpu()}


def decode_maps(stored: dict[str, Tensor]) -> Tensor:
    """encode_maps' output -> float32 (N, h, w) raw maps."""
    return stored["codes"].float() * stored["span"][:, None, None] + stored["low"][:, None, None]


def as_stored(raw: Tensor) -> Tensor:
    """(N, h, w) raw maps as the CAM cache gives them back (encoded, then decoded): what localize scored."""
    return decode_maps(encode_maps(raw)).to(raw.device)
