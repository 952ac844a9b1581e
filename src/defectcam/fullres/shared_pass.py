"""A product's two maps from one classifier pass: the CAM's forward and backward also feed the decoder.

A product entry (fullres_x_<cam>) multiplies the weak decoder's probabilities by a CAM of the same
classifier. Computed apart, each runs the classifier's forward pass: the decoder reads the stem and
layer1..layer4 outputs (up to its deepest layer), the CAM hooks one of them and differentiates the logits. Here the decoder reads
the outputs the CAM's own forward pass produced (recorded detached, so the decoder adds nothing to the
backward pass): one forward, one backward and the decoder per transform, instead of two forwards.
The maps are those of `tta_cams` and `defect_probabilities`; `tests/test_fullres_products.py` holds it to both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from defectcam.cams.extractor import Target, extract_cams
from defectcam.cams.tta import tta_transforms

# the classifier's modules whose outputs resnet_features returns after the image: the stem (its only top-level
# ReLU) and the four stages
FEATURE_MODULES = ("relu", "layer1", "layer2", "layer3", "layer4")


@contextmanager
def recorded_outputs(net: nn.Module, names: tuple[str, ...]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks on `net`'s modules `names`; yields {name: detached output} of the last pass; removed on exit."""
    store: dict[str, Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, tuple, Tensor], None]:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            store[name] = output.detach()
        return hook

    handles = []
    try:  # a name that is not a module fails after earlier hooks went on: they come off too
        for name in names:
            handles.append(net.get_submodule(name).register_forward_hook(recorder(name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def product_sources(network: nn.Module, images: Tensor, method: str, layer: str, target_class: Target = 1,
                    tta: str = "none") -> tuple[Tensor, Tensor, Tensor]:
    """images (N, 3, H, W) -> (logits (N, 2) of the untransformed images, raw CAMs (N, h, w) of `method` at `layer`,
    defect probabilities (N, H, W)), both maps averaged over the `tta` set, each mapped back.

    `network` is a FullResolutionNet that decodes its classifier's own features (not a trained encoder copy)."""
    if getattr(network, "encoder", None) is not None:
        raise ValueError("a network that decodes a trained encoder's features runs its own backbone pass")
    classifier = network.classifier

    def one_pass(images: Tensor, target: Target, check_range: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, raw CAMs, defect probabilities) of `images` from one forward and one backward pass."""
        with recorded_outputs(classifier, FEATURE_MODULES) as features:
            result = extract_cams(classifier, images, [layer], [method], target, check_range)
            stages = [features[name] for name in FEATURE_MODULES]
        with torch.no_grad():
            probs = network.decode([images, *stages]).float().softmax(1)[:, 1]
        return result.logits, result.maps[method][layer], probs

    transforms = tta_transforms(tta)
    logits, cam_total, prob_total = one_pass(images, target_class)  # the identity comes first in every set
    if isinstance(target_class, str):  # 'predicted': every transform explains the image's own class
        target_class = logits.argmax(1)
    for transform in transforms[1:]:
        # the targets of the first pass: checked there, or the argmax of this classifier's logits
        _, cam, probs = one_pass(transform.apply(images), target_class, check_range=False)
        cam_total, prob_total = cam_total + transform.invert(cam), prob_total + transform.invert(probs)
    return logits.float(), cam_total / len(transforms), prob_total / len(transforms)
