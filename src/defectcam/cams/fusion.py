"""Fusion of normalized layer maps (each (N, h_i, w_i) in [0, 1]) into one (N, H, W) map in [0, 1].

LayerCAM's fusion (tanh scaling, then element-wise max) and the multiplicative fusion of the
talk (element-wise product or geometric mean). Both renormalize per image after fusing, so an
all-zero input stays all zero.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from defectcam.cams.normalize import NORM_EPS, check_maps, check_size, minmax, resize
from defectcam.errors import ConfigError

FUSION_MODES = ("product", "geometric")


def _check_layer_maps(maps: Sequence[Tensor]) -> list[Tensor]:
    """Raise ValueError unless maps is a non-empty sequence of (N, h_i, w_i) maps sharing N."""
    if isinstance(maps, Tensor) or len(maps) == 0:
        raise ValueError("maps must be a non-empty sequence of (N, h, w) tensors, one per layer")
    for index, layer_map in enumerate(maps):
        check_maps(layer_map, f"maps[{index}]")
    batches = {int(layer_map.shape[0]) for layer_map in maps}
    if len(batches) != 1:
        raise ValueError(f"all maps must have the same batch size, got {sorted(batches)}")
    return list(maps)


def layercam_scale(maps: Tensor, gamma: float = 2.0) -> Tensor:
    """(N, h, w) -> (N, h, w): LayerCAM eq. 9, tanh(gamma * M / max(M)) per image (0 for M = 0)."""
    peak = maps.float().flatten(1).amax(dim=1).clamp(min=NORM_EPS)[:, None, None]
    return torch.tanh(gamma * maps.float() / peak)


def fuse_layercam(
    maps: Sequence[Tensor], size: Sequence[int], gamma: float = 2.0, renormalize: bool = True
) -> Tensor:
    """L maps (N, h_i, w_i) -> (N, H, W): min-max( max_i up(tanh(gamma * M_i / max M_i)) ).

    Jiang et al., "LayerCAM", IEEE TIP 2021, eq. 9 with gamma = 2: each layer map M_i is scaled
    to M_i' = tanh(gamma * M_i / max(M_i)) at its own resolution (for min-max normalized inputs
    max(M_i) = 1, so M_i' = tanh(gamma * M_i)), bilinearly upsampled to `size`, fused by an
    element-wise max, then min-max renormalized per image (skipped with renormalize=False).
    """
    layer_maps, size = _check_layer_maps(maps), check_size(size)
    fused = resize(layercam_scale(layer_maps[0], gamma), size)
    for layer_map in layer_maps[1:]:
        fused = torch.maximum(fused, resize(layercam_scale(layer_map, gamma), size))
    return minmax(fused) if renormalize else fused


def fuse_multiplicative(
    maps: Sequence[Tensor], size: Sequence[int], mode: str = "product", renormalize: bool = True
) -> Tensor:
    """L maps (N, h_i, w_i) -> (N, H, W): min-max( prod_i up(M_i) ), or of its L-th root ("geometric")."""
    if mode not in FUSION_MODES:
        raise ConfigError(f"unknown fusion mode {mode!r}; choose from {', '.join(FUSION_MODES)}")
    layer_maps, size = _check_layer_maps(maps), check_size(size)
    # resize returns a fresh tensor unless sizes match: clone so the caller's map is never written.
    fused = resize(layer_maps[0], size).clone()
    for layer_map in layer_maps[1:]:
        fused.mul_(resize(layer_map, size))
    if mode == "geometric":
        # The geometric mean keeps the [0, 1] scale of the inputs; the raw product shrinks as L grows.
        fused.pow_(1.0 / len(layer_maps))
    return minmax(fused) if renormalize else fused
