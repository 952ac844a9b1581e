"""Random-init ResNets whose CAMs are not trivially zero, shared by the CAM tests."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def calibrated_resnet(arch: str, size: int = 128, seed: int = 0, passes: int = 3) -> nn.Module:
    """Random-init 2-class ResNet in eval mode with non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(num_classes=2)
    model.train()
    with torch.no_grad():
        # Default BN stats (mean 0, var 1) make activations explode and most maps vanish.
        for _ in range(passes):
            model(torch.randn(8, 3, size, size))
        # Positive class-1 weights: layer4 maps then have positive evidence somewhere.
        model.fc.weight[1].abs_()
    return model.eval()
