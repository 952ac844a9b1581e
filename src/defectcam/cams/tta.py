"""Test-time augmentation of CAMs over flips and quarter turns (DAGM textures have no orientation).

Each transform g of a set acts on the image's last two dimensions; the CAMs of g(x) are computed in
one pass as usual and mapped back with g's inverse, and the maps are averaged:

    M(x) = 1/|G| * sum_g  g^-1( CAM(g(x)) )

When the set is a group (`flips`: the identity, both mirrors and the half turn; `dihedral`: all 8
flips and quarter turns), M is exactly equivariant: M(h(x)) = h(M(x)) for every h in it, whatever the
network, for a fixed target class (with target 'predicted', as long as h(x) is predicted as x is). The logits stay those of the untransformed image (the classifier's own decision), and with
target 'predicted' every transform explains that same class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from defectcam.cams.extractor import CamResult, Target, extract_cams


@dataclass(frozen=True)
class Dihedral:
    """A mirror (left-right, applied first) and `turns` quarter turns (torch.rot90) of the last two dimensions."""

    turns: int = 0
    mirror: bool = False

    def apply(self, x: Tensor) -> Tensor:
        x = x.flip(-1) if self.mirror else x
        return torch.rot90(x, self.turns, dims=(-2, -1)) if self.turns % 4 else x

    def invert(self, x: Tensor) -> Tensor:
        x = torch.rot90(x, -self.turns, dims=(-2, -1)) if self.turns % 4 else x
        return x.flip(-1) if self.mirror else x


TTA_SETS: dict[str, tuple[Dihedral, ...]] = {
    "none": (Dihedral(),),
    # identity, left-right mirror, up-down mirror (mirror then half turn), half turn
    "flips": (Dihedral(), Dihedral(0, True), Dihedral(2, True), Dihedral(2)),
    "dihedral": tuple(Dihedral(turns, mirror) for mirror in (False, True) for turns in range(4)),
}


def tta_transforms(name: str) -> tuple[Dihedral, ...]:
    """The transforms of a cam.tta name (none | flips | dihedral); ValueError for another."""
    if name not in TTA_SETS:
        raise ValueError(f"cam.tta must be one of {', '.join(TTA_SETS)}, got {name!r}")
    return TTA_SETS[name]


def tta_cams(model: nn.Module, images: Tensor, layers: Sequence[str] | str, methods: Sequence[str] | str,
             target_class: Target = 1, tta: str = "none") -> CamResult:
    """Images (N, C, H, W) -> raw maps[method][layer] (N, h, w) averaged over the `tta` set (mapped back to the
    image's orientation) and the logits (N, C) of the untransformed images; `none` is extract_cams itself."""
    transforms = tta_transforms(tta)
    first = extract_cams(model, images, layers, methods, target_class)
    if len(transforms) == 1:
        return first
    if isinstance(target_class, str):  # 'predicted': the class the classifier gives the image itself
        target_class = first.logits.argmax(1)
    sums = {method: {layer: raw.clone() for layer, raw in per.items()} for method, per in first.maps.items()}
    for transform in transforms[1:]:
        # an argmax of the model's own logits: in range by construction
        result = extract_cams(model, transform.apply(images), layers, methods, target_class, check_range=False)
        for method, per_layer in result.maps.items():
            for layer, raw in per_layer.items():
                sums[method][layer] += transform.invert(raw)
    maps = {method: {layer: total / len(transforms) for layer, total in per.items()} for method, per in sums.items()}
    return CamResult(maps=maps, logits=first.logits)
