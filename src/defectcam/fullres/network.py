"""The full-resolution network: a frozen torchvision ResNet classifier and a U-Net decoder over its features.

The decoder is segmentation-models-pytorch's U-Net decoder over the stem and layer1..layer4 of the
classifier (strides 2, 4, 8, 16, 32) by default, ending in a 3x3 convolution to background/defect logits. Each
decoder block doubles the scale, starting from the deepest stage's: over layer4 five blocks reach the input resolution; fewer
stop at a coarser one (three: layer1's, 1/4) and the logits are upsampled bilinearly to the input size,
which costs a fraction of the full-resolution blocks (16 channels at the input size cost on a CPU about
what a backward pass through the encoder does).

`deepest_layer` (smp's encoder depth) stops the decoder's encoder earlier: over stem..layer3 (four blocks reach
the input) or stem..layer2 (three). A map then runs only that part of the classifier: on a CPU its layer4 alone
costs about a quarter of `compute_cams` at 256 px. The classifier's logits (the gate) still need layer4, so
`forward` runs it whole; `decoder_logits` is the map alone. The classifier's weights and BatchNorm statistics are never changed: its parameters
do not require gradients and it stays in eval mode whatever mode the network is put in.

smp's decoder drops the input-scale skip: its last block sees nothing finer than the stem (1/2 scale). With
`image_channels` > 0 a small trainable branch of its own (two 3x3 convolutions on the image, the second dilated)
gives the decoder's output a skip at the input scale, fused by one more 3x3 convolution before the head: the
frozen classifier's early features are what a from-scratch classifier learnt to classify, not to outline.

`train_encoder=True` (the fully supervised reference only) decodes the features of a trainable copy of the
classifier instead: the classifier itself, whose logits the network also returns, stays frozen, so a map then
costs two backbone passes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectcam.fullres import unet_forward

if TYPE_CHECKING:  # torchvision costs seconds at start-up; a stage builds its ResNet where it needs one
    from torchvision.models import ResNet

DECODER_CHANNELS = (128, 64, 32, 16, 16)
DEEPEST_LAYERS = ("layer2", "layer3", "layer4")  # where the decoder's encoder may stop (smp's encoder depth 3..5)


def feature_count(deepest_layer: str) -> int:
    """How many of resnet_features' outputs reach `deepest_layer`: the image, the stem and layer1..that layer."""
    if deepest_layer not in DEEPEST_LAYERS:
        raise ValueError(f"deepest layer {deepest_layer!r} is not one of {', '.join(DEEPEST_LAYERS)}")
    return 2 + int(deepest_layer[-1])


def resnet_features(net: ResNet, images: Tensor, deepest_layer: str = "layer4") -> list[Tensor]:
    """(N, 3, H, W) -> [images, stem (H/2), layer1 (H/4), layer2 (H/8), layer3 (H/16), layer4 (H/32)], stopped
    after `deepest_layer` (the stages past it are not run)."""
    count = feature_count(deepest_layer)
    features = [images, net.relu(net.bn1(net.conv1(images)))]
    features.append(net.layer1(net.maxpool(features[-1])))
    while len(features) < count:
        features.append(getattr(net, f"layer{len(features) - 1}")(features[-1]))
    return features


def classifier_logits(net: ResNet, layer4: Tensor) -> Tensor:
    """The classifier's (N, classes) logits from its layer4 output (its own pooling and head)."""
    return net.fc(torch.flatten(net.avgpool(layer4), 1))


def stage_channels(net: ResNet) -> tuple[int, ...]:
    """Channels of resnet_features' six outputs: (3, stem, layer1..layer4)."""
    def out_channels(layer: nn.Sequential) -> int:
        block = layer[-1]
        return int((block.bn3 if hasattr(block, "bn3") else block.bn2).num_features)

    return (3, int(net.bn1.num_features), *(out_channels(getattr(net, f"layer{i}")) for i in range(1, 5)))


def conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """A 3x3 convolution (padding keeps the size), BatchNorm and ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class FullResolutionNet(nn.Module):
    """images (N, 3, H, W) -> (classifier logits (N, 2), decoder logits (N, 2, H, W)); the classifier frozen.

    `decoder_channels` holds one entry per decoder block (1 to 5 over layer4, 1 to 4 over layer3, 1 to 3 over layer2), from
    `deepest_layer`'s scale up; `image_channels` > 0 adds the trainable input-scale branch (0: none);
    `train_encoder` decodes a trainable copy's features."""

    def __init__(self, classifier: ResNet, decoder_channels: Sequence[int] = DECODER_CHANNELS, image_channels: int = 0,
                 train_encoder: bool = False, deepest_layer: str = "layer4") -> None:
        super().__init__()
        self.classifier = classifier.eval()
        for parameter in self.classifier.parameters():
            parameter.requires_grad_(False)
        self.deepest_layer, self.feature_count = deepest_layer, feature_count(deepest_layer)
        # Its BatchNorm statistics stay the classifier's too (train() keeps it in eval mode): batches of 8 are
        # too few to re-estimate them.
        self.encoder = copy.deepcopy(self.classifier).requires_grad_(True) if train_encoder else None
        if self.encoder is not None:  # the copy's stages past the deepest layer would be weights nothing reads
            for index in range(self.feature_count - 1, 5):  # feature_count - 2 is the deepest layer's index
                setattr(self.encoder, f"layer{index}", nn.Identity())
        # Imported here: segmentation_models_pytorch imports timm and huggingface_hub (seconds), which stages
        # that never build a decoder should not pay for.
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        channels = tuple(int(c) for c in decoder_channels)
        if not 1 <= len(channels) < self.feature_count:
            raise ValueError(f"{len(channels)} decoder blocks over stages up to {deepest_layer}: 1 to {self.feature_count - 1}")
        self.decoder = UnetDecoder(stage_channels(classifier)[: self.feature_count], channels, n_blocks=len(channels))
        self.image_channels = int(image_channels)
        if self.image_channels > 0:
            self.image_branch = nn.Sequential(conv_bn_relu(3, self.image_channels),
                                              conv_bn_relu(self.image_channels, self.image_channels, dilation=2))
            self.fuse = conv_bn_relu(channels[-1] + self.image_channels, channels[-1])
        self.head = nn.Conv2d(channels[-1], 2, kernel_size=3, padding=1)

    def train(self, mode: bool = True) -> FullResolutionNet:
        super().train(mode)
        self.classifier.eval()  # BatchNorm statistics of the classifier are never updated
        if self.encoder is not None:
            self.encoder.eval()
        return self

    def features(self, images: Tensor) -> list[Tensor]:
        """resnet_features of what the decoder reads, up to its deepest layer: the classifier's, or the trainable copy's."""
        return resnet_features(self.encoder if self.encoder is not None else self.classifier, images, self.deepest_layer)

    def decode(self, features: list[Tensor]) -> Tensor:
        """resnet_features' output (any stages past the deepest layer are ignored) -> decoder logits (N, 2, H, W) at
        the input resolution (features[0]'s)."""
        decoded = unet_forward.decode(self.decoder, features[: self.feature_count])
        size = features[0].shape[-2:]
        if self.image_channels > 0:
            if decoded.shape[-2:] != size:
                decoded = F.interpolate(decoded, size=size, mode="bilinear", align_corners=False)
            decoded = self.fuse(torch.cat([decoded, self.image_branch(features[0])], dim=1))
        logits = self.head(decoded)
        if logits.shape[-2:] != size:  # a decoder of fewer than 5 blocks stops at a coarser scale
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = resnet_features(self.classifier, images)
        logits = classifier_logits(self.classifier, features[-1])
        return logits, self.decode(features if self.encoder is None else self.features(images))

    def decoder_logits(self, images: Tensor) -> Tensor:
        """The map alone: decoder logits (N, 2, H, W), running the backbone only up to the deepest layer."""
        return self.decode(self.features(images))

    def decoder_state(self) -> dict[str, Tensor]:
        """The trained part's weights (decoder, head, image branch, trained encoder), as a state dict of detached copies."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("classifier.")}
