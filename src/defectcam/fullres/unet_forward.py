"""segmentation-models-pytorch's U-Net decoder run without PyTorch's slow nearest-neighbour upsampling.

Each smp decoder block starts with `F.interpolate(..., mode="nearest")` to the next stage's size. On the
project's CPUs that op (aten::upsample_nearest2d) copies about 8x slower than the same values repeated with
`expand` and `reshape`: in a profile of a decoder over layer1 and layer2 it was 62 % of the decoder's time, and
it was most of what the default decoder spent outside its convolutions. Where a block doubles the size
exactly (every block of a decoder over an image whose side is a multiple of 32), `upsample_nearest` repeats
each value 2x2 in a contiguous CPU tensor, which is the same tensor, bit for bit; any other size, a channels_last
tensor, a GPU and a graph being exported (torch.export, and the ONNX export built on it) keep `F.interpolate`.

`decode` is `UnetDecoder.forward` (smp 0.6.0, pinned) with that one substitution, over the decoder's own
modules, so stored weights load as before. It takes the fast path only where no gradient is recorded: the
backward pass of a repeat sums each 2x2 block in another order than upsample_nearest2d's backward does, and
decoders trained before this file existed must train again to the same bits. tests/test_fullres_stage.py
holds `decode` to smp's own forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder


def upsample_nearest(x: Tensor, size: tuple[int, int], mode: str = "nearest") -> Tensor:
    """F.interpolate(x, size, mode=mode), as a 2x2 repeat when the mode is nearest, `size` doubles x's, x is a
    contiguous CPU tensor, no gradient is recorded and nothing is being exported."""
    n, c, h, w = x.shape
    # Only a contiguous CPU tensor: F.interpolate keeps a channels_last input in its layout (the layout the GPU recipe
    # trains in, whose convolutions then pick other kernels), and on CUDA the op is not the slow one.
    fast = mode == "nearest" and tuple(size) == (2 * h, 2 * w) and x.device.type == "cpu" and x.is_contiguous()
    # Nor in an exported graph: onnxruntime runs its Resize op faster than the Expand and Reshape a repeat becomes
    # (the default decoder's localizer.onnx 0.632 s against 0.708 s for 8 images at 256 px).
    if not fast or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return F.interpolate(x, size=tuple(size), mode=mode)
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def decode(decoder: UnetDecoder, features: list[Tensor]) -> Tensor:
    """decoder(features), smp's UnetDecoder.forward with `upsample_nearest` in each block."""
    sizes = [tuple(int(s) for s in feature.shape[2:]) for feature in features][::-1]
    stages = features[1:][::-1]  # the first feature (the image) is never a skip; deepest first
    x, skips = decoder.center(stages[0]), stages[1:]
    for i, block in enumerate(decoder.blocks):
        x = upsample_nearest(x, sizes[i + 1], block.interpolation_mode)
        if i < len(skips):
            x = block.attention1(torch.cat([x, skips[i]], dim=1))
        x = block.attention2(block.conv2(block.conv1(x)))
    return x
