"""How a full-resolution decoder is trained (its recipe) and what it trains on, without Lightning: the fullres stage
reads these to decide what to reuse, and only a training imports the LightningModule (models/decoder_module.py)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.utils.data import Dataset

SUPERVISIONS = ("cams", "masks")


@dataclass(frozen=True)
class DecoderRecipe:
    """How a decoder is trained (every field is recorded in the fullres cache's meta)."""

    supervision: str = "cams"
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 50
    n_foreground: int = 4
    n_background: int = 8
    patch: int = 5
    negatives: bool = True
    pairwise_weight: float = 0.0
    pairwise_radius: int = 2
    sigma_xy: float = 2.0
    sigma_intensity: float = 0.1
    size_weight: float = 0.0
    size_low: float = 0.005
    size_high: float = 0.3
    augment: bool = True
    crop: int | None = None
    seed: int = 0
    train_encoder: bool = False  # the network decodes a trainable copy of the classifier (the supervised reference)
    encoder_lr: float = 1e-4


class DecoderTrainSet(Dataset):
    """The train part: uint8 images (N, S, S), labels (N,) and per image either seed regions or a mask (N, S, S)."""

    def __init__(self, images: Tensor, labels: Tensor, foreground: Tensor, background: Tensor) -> None:
        self.images, self.labels, self.foreground, self.background = images, labels, foreground, background

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "foreground": self.foreground[i], "background": self.background[i]}


def normalized(images: Tensor, mean: float, std: float) -> Tensor:
    """uint8 (N, S, S) -> (N, 3, S, S) float, normalized as the classifier was trained."""
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
