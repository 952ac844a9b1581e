"""One scored entry as a network over gray images: what its map is made from, before any per-image resizing.

An entry's map needs, besides the classifier's logit margin, the decoder's defect probabilities (a decoder entry,
a product), the raw CAMs of one method at its layers (a CAM entry, a fusion, a product), or both. `EntryNetwork`
computes exactly those from gray images in [0, 1]: predict runs it in PyTorch, and `defectcam-export` traces this
same module into one graph (backward pass included for CAMs), so both backends run the same arithmetic. Turning
the sources into the [0, 1] scoring map at an image's own size (upsampling, min-max, fusion, the product's gate)
stays outside the network, as localize does it: it depends on each image's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from defectcam.cams.tta import tta_cams
from defectcam.evaluation.classification import logit_margin
from defectcam.fullres import DECODER_METHODS
from defectcam.fullres.maps import defect_probabilities
from defectcam.fullres.shared_pass import product_sources
from defectcam.localization.entries import Fusion, entry_sources
from defectcam.localization.products import WEAK_DECODER, product_cam

MARGIN, PROBABILITY, CAM_PREFIX = "logit_margin", "defect_probability", "cam_"


@dataclass(frozen=True)
class EntryParts:
    """What an entry's map is built from: a decoder (its method name, None without one) and one CAM method's layers."""

    decoder: str | None
    cam_method: str | None
    cam_layers: tuple[str, ...]

    def output_names(self) -> list[str]:
        """The network's outputs, in order: the margin, the probabilities when there is a decoder, a raw CAM per layer."""
        return [MARGIN, *([PROBABILITY] if self.decoder else []), *(CAM_PREFIX + layer for layer in self.cam_layers)]


@dataclass(frozen=True)
class EntrySources:
    """How an entry's sources are made, as localize scored them: its parts, the CAMs' target class and TTA, the
    decoder's TTA ("none" without one) and, for a fusion, its mode. What an exported localizer must match."""

    parts: EntryParts
    target: int | str
    cam_tta: str
    decoder_tta: str
    fusion_mode: str | None = None


def entry_parts(method: str, layer: str, fusions: Mapping[str, Fusion]) -> EntryParts:
    """The parts of a scored entry (method, layer); a fusion by name reads its method and layers from `fusions`."""
    if method in DECODER_METHODS.values():
        return EntryParts(method, None, ())
    cam = product_cam(method)
    if cam is not None:  # a product multiplies the weak decoder's map
        return EntryParts(WEAK_DECODER, cam, (layer,))
    cam_method, layers = entry_sources(method, layer, fusions)
    return EntryParts(None, cam_method, tuple(layers))


def split_outputs(parts: EntryParts, outputs: tuple[Tensor, ...] | list[Tensor]) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """The network's outputs (in `parts.output_names()` order) -> (margins, probabilities or None, layer -> raw CAMs)."""
    names = parts.output_names()
    if len(outputs) != len(names):
        raise ValueError(f"expected outputs {', '.join(names)}, got {len(outputs)}")
    named = dict(zip(names, outputs))
    return named[MARGIN], named.get(PROBABILITY), {layer: named[CAM_PREFIX + layer] for layer in parts.cam_layers}


class EntryNetwork(nn.Module):
    """gray (N, 1, S, S) in [0, 1] -> (logit margins (N,), [defect probabilities (N, S, S)], raw CAMs (N, h, w) per layer).

    Normalizes with the problem's (mean, std) and repeats the channel as training did. The CAMs are those of the cams
    stage (`tta_cams`: the target, the CAM cache's TTA); the probabilities those of the fullres stage
    (`defect_probabilities` with the decoder's own TTA). A product whose two TTA sets agree takes both from one
    classifier pass per transform (fullres/shared_pass.py). The margin is the decoder's classifier pass when there is
    a decoder (the same classifier), else the CAMs'. The classifier and decoder given are frozen in place."""

    def __init__(self, classifier: nn.Module, normalization: tuple[float, float], parts: EntryParts, target: int | str = 1,
                 cam_tta: str = "none", decoder: nn.Module | None = None, decoder_tta: str = "none") -> None:
        super().__init__()
        if (decoder is None) != (parts.decoder is None):
            raise ValueError(f"entry parts {parts} and decoder {'given' if decoder is not None else 'missing'} disagree")
        if decoder is not None and decoder.classifier is not classifier:
            raise ValueError("the decoder must decode this classifier's features")
        # A decoder holds the classifier itself, so it is registered once: under two names, torch.func.functional_call
        # (the export's tracer) does not put the real weights back after tracing.
        self.decoder, self.parts = decoder, parts
        self.own_classifier = classifier if decoder is None else None
        self.mean, self.std = float(normalization[0]), float(normalization[1])
        self.target, self.cam_tta, self.decoder_tta = target, cam_tta, decoder_tta
        # Nothing here trains: frozen weights (CAMs differentiate the activations only, and an exported graph then
        # holds no weight gradient), BatchNorm statistics and no dropout, as localize scored.
        self.requires_grad_(False).eval()

    @classmethod
    def from_sources(cls, classifier: nn.Module, normalization: tuple[float, float], sources: EntrySources,
                     decoder: nn.Module | None = None) -> EntryNetwork:
        """The network that makes an entry's sources as localize scored them (`sources`: its parts, target and TTAs)."""
        return cls(classifier, normalization, sources.parts, sources.target, sources.cam_tta, decoder, sources.decoder_tta)

    @property
    def classifier(self) -> nn.Module:
        return self.decoder.classifier if self.decoder is not None else self.own_classifier

    def shares_pass(self) -> bool:
        """A product whose CAM and decoder average over the same TTA set, the decoder reading the classifier's features."""
        return (self.decoder is not None and self.parts.cam_method is not None and self.cam_tta == self.decoder_tta
                and getattr(self.decoder, "encoder", None) is None)

    def forward(self, gray: Tensor) -> tuple[Tensor, ...]:
        images = ((gray - self.mean) / self.std).expand(-1, 3, -1, -1)
        parts, probs, raw = self.parts, None, {}
        if self.shares_pass():
            (layer,) = parts.cam_layers
            with torch.enable_grad():
                logits, cam, probs = product_sources(self.decoder, images, parts.cam_method, layer, self.target, self.cam_tta)
            raw = {layer: cam.float()}
        else:
            if self.decoder is not None:
                with torch.no_grad():
                    logits, probs = defect_probabilities(self.decoder, images, self.decoder_tta)
            if parts.cam_method is not None:
                with torch.enable_grad():  # CAMs need gradients, whatever the caller's mode
                    result = tta_cams(self.classifier, images, list(parts.cam_layers), [parts.cam_method], self.target,
                                      self.cam_tta)
                raw = {layer: maps.float() for layer, maps in result.maps[parts.cam_method].items()}
                if self.decoder is None:
                    logits = result.logits
        outputs = [logit_margin(logits), *([probs] if probs is not None else []), *(raw[layer] for layer in parts.cam_layers)]
        return tuple(outputs)
