"""What gets scored: every cached (method, layer), the configured fusions and the baselines, as [0,1] maps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from defectcam.cams import fuse_layercam, fuse_multiplicative, scoring_maps
from defectcam.errors import ConfigError
from defectcam.fullres.maps import probability_scoring_maps
from defectcam.localization.baselines import BASELINES

BASELINE_LAYER = "-"


@dataclass(frozen=True)
class Fusion:
    """A fused map: which method's layer maps, which layers, and how ('layercam' max or 'product'/'geometric')."""

    name: str
    method: str
    layers: tuple[str, ...]
    mode: str


FUSION_MODES = ("layercam", "product", "geometric")  # how a fusion combines its layer maps (fuse)


def fusions_from(config: Mapping[str, Mapping[str, object]] | None) -> list[Fusion]:
    """Fusions from the cam.fusions config: layercam_fused -> tanh+max; multiplicative -> product and geometric."""
    fusions = []
    for name, spec in (config or {}).items():
        method, layers = str(spec["method"]), tuple(str(layer) for layer in spec["layers"])
        if name.startswith("layercam"):
            fusions.append(Fusion(name, method, layers, "layercam"))
        elif name.startswith("multiplicative"):
            fusions += [Fusion(name, method, layers, "product"), Fusion(f"{name}_geometric", method, layers, "geometric")]
        else:
            raise ConfigError(f"cam.fusions.{name}: unknown fusion (names start with layercam or multiplicative)")
    return fusions


def fuse(fusion: Fusion, maps: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """Fuse [0,1] layer maps into one (N, H, W) map in [0, 1]."""
    if fusion.mode == "layercam":
        return fuse_layercam(maps, size)
    return fuse_multiplicative(maps, size, mode=fusion.mode)


def entry_sources(method: str, layer: str, fusions: Mapping[str, Fusion]) -> tuple[str, list[str]]:
    """The CAM method and layers an entry (a method at a layer, or a fusion by name) is built from."""
    fusion = fusions.get(method)
    return (fusion.method, list(fusion.layers)) if fusion else (method, [layer])


def entry_scoring_maps(raw: Mapping[str, Mapping[str, Tensor]], method: str, layer: str, fusions: Mapping[str, Fusion],
                       size: tuple[int, int]) -> Tensor:
    """(N, H, W) [0, 1] scoring maps of one entry from raw maps[method][layer], as localize builds them."""
    fusion = fusions.get(method)
    if fusion is None:
        return scoring_maps(raw[method][layer], size)
    return fuse(fusion, [scoring_maps(raw[fusion.method][name], size) for name in fusion.layers], size)


def scored_entries(
    raw: Mapping[str, Mapping[str, Tensor]],
    size: tuple[int, int],
    methods: Sequence[str] | None,
    layers: Sequence[str] | None,
    fusions: Sequence[Fusion],
    baselines: Sequence[str],
    seed: int,
    probabilities: Mapping[str, Mapping[str, Tensor]] | None = None,
) -> Iterator[tuple[str, str, Tensor]]:
    """(method, layer, scoring maps (N, H, W)) for every selected cached map, fusion, probability map and baseline.

    `probabilities[method][layer]` (N, h, w) are maps that already are probabilities (the full-resolution
    decoders'): they are upsampled, never min-max normalized, so a defect-free image can stay empty."""
    n = next(iter(next(iter(raw.values())).values())).shape[0]
    for method, per_layer in raw.items():
        if methods is not None and method not in methods:
            continue
        for layer, maps in per_layer.items():
            if layers is None or layer in layers:
                yield method, layer, scoring_maps(maps, size)
    for fusion in fusions:
        if fusion.method not in raw or any(layer not in raw[fusion.method] for layer in fusion.layers):
            raise ConfigError(f"cam.fusions.{fusion.name}: needs {fusion.method} maps of {list(fusion.layers)}, not all cached")
        if methods is None or fusion.name in methods or fusion.name.removesuffix("_geometric") in methods:
            layer_maps = [scoring_maps(raw[fusion.method][layer], size) for layer in fusion.layers]
            yield fusion.name, "+".join(fusion.layers), fuse(fusion, layer_maps, size)
    for method, per_layer in (probabilities or {}).items():
        if methods is None or method in methods:
            for layer, maps in per_layer.items():
                yield method, layer, probability_scoring_maps(maps, size)
    for name in baselines:
        if name not in BASELINES:
            raise ConfigError(f"localize.baselines: {name!r} is not one of {', '.join(BASELINES)}")
        if methods is None or name in methods:
            yield name, BASELINE_LAYER, BASELINES[name](n, size, seed=seed)


def masks_tensor(masks: Sequence[object]) -> Tensor:
    """(N, H, W) bool tensor from per-image bool arrays."""
    # np.array copies: cached masks are read-only memory maps, which torch would only warn about.
    return torch.stack([torch.from_numpy(np.array(m, dtype=bool)) for m in masks])
