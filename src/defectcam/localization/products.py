"""The weak decoder's map times a CAM's: the decoder says whether an image holds a defect, the CAM helps say where.

An entry of method ``fullres_x_<cam method>`` at a CAM layer is the decoder's probability times that CAM's [0, 1]
scoring map, emptied on every image where the decoder has no pixel at or above its own validation threshold. The
gate is needed because a min-max normalized CAM reaches 1 on every image: the bare product flags a defect-free
image wherever the decoder is merely unsure (on real DAGM problem 1, up to 37 % of the defect-free test images,
where the decoder alone flags at most one). That threshold is the one the protocol itself would choose for the
decoder (exact, ungated, no post-process, by the protocol's score), so validation alone decides it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from torch import Tensor

from defectcam.cams import scoring_maps
from defectcam.fullres import DECODER_METHODS
from defectcam.fullres.maps import probability_scoring_maps
from defectcam.localization.exact import best_exact_threshold, sort_pixels

PRODUCT_PREFIX = "fullres_x_"
WEAK_DECODER = DECODER_METHODS["cams"]  # products use the weakly supervised decoder only, never the reference


def product_method(cam_method: str) -> str:
    """The entry's method name: 'gradcampp' -> 'fullres_x_gradcampp'."""
    return PRODUCT_PREFIX + cam_method


def product_cam(method: str) -> str | None:
    """The CAM method a product entry multiplies ('fullres_x_gradcampp' -> 'gradcampp'), None for any other entry."""
    return method[len(PRODUCT_PREFIX):] if method.startswith(PRODUCT_PREFIX) else None


def decoder_gate_threshold(decoder_maps: Tensor, masks: Tensor, defective: Tensor, select_on: str) -> float:
    """The decoder's own validation threshold: exact, ungated, the one its entry's val-best row reports."""
    return best_exact_threshold(sort_pixels(decoder_maps, masks, defective), None, select_on)[0]


def gated_product(decoder_maps: Tensor, cam_maps: Tensor, threshold: float) -> Tensor:
    """(N, H, W) decoder probabilities x (N, H, W) [0, 1] CAM maps, zero on images whose decoder stays below `threshold`."""
    if decoder_maps.shape != cam_maps.shape:
        raise ValueError(f"decoder maps {tuple(decoder_maps.shape)} and CAM maps {tuple(cam_maps.shape)} differ in shape")
    flagged = decoder_maps.flatten(1).amax(dim=1) >= threshold
    return decoder_maps * cam_maps * flagged[:, None, None].to(decoder_maps.dtype)


def weak_decoder_maps(probabilities: Mapping[str, Mapping[str, Tensor]] | None, size: tuple[int, int]) -> Tensor | None:
    """The weak decoder's (N, H, W) scoring maps at `size` (None without one); the fullres stage keeps one per method."""
    decoders = (probabilities or {}).get(WEAK_DECODER)
    if not decoders:
        return None
    if len(decoders) != 1:
        raise ValueError(f"{WEAK_DECODER}: {len(decoders)} stored decoders ({', '.join(decoders)}); products need exactly one")
    (maps,) = decoders.values()
    return probability_scoring_maps(maps, size)


def product_entries(raw: Mapping[str, Mapping[str, Tensor]], decoder_maps: Tensor, size: tuple[int, int],
                    cam_methods: Sequence[str], layers: Sequence[str] | None, threshold: float) -> Iterator[tuple[str, str, Tensor]]:
    """(method, layer, gated product maps) for every CAM method in `cam_methods` at every cached layer (or `layers`)."""
    for cam_method in cam_methods:
        for layer, maps in raw[cam_method].items():
            if layers is None or layer in layers:
                yield product_method(cam_method), layer, gated_product(decoder_maps, scoring_maps(maps, size), threshold)
