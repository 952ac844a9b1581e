"""The exported graph: a problem's classifier and full-resolution decoder as one module over gray images."""

from __future__ import annotations

from torch import Tensor, nn

from defectcam.fullres.maps import defect_probabilities
from defectcam.fullres.network import FullResolutionNet


class Localizer(nn.Module):
    """gray (N, 1, S, S) float in [0, 1] -> (logit margin (N,) = logit[1] - logit[0], defect probability (N, S, S)).

    Normalizes with the problem's (mean, std) and repeats the channel as training did, then runs the network
    through fullres.maps.defect_probabilities itself, so the TTA (transforms, order of the sum, average) is traced
    from the very code predict runs with torch: both backends compute the same arithmetic."""

    def __init__(self, network: FullResolutionNet, normalization: tuple[float, float], tta: str = "none") -> None:
        super().__init__()
        # An inference graph: nothing in it trains, so torch.export records no autograd state.
        self.network = network.eval().requires_grad_(False)
        self.mean, self.std = float(normalization[0]), float(normalization[1])
        self.tta = tta
        self.eval()  # a deployment graph: BatchNorm statistics, no dropout

    def forward(self, gray: Tensor) -> tuple[Tensor, Tensor]:
        images = ((gray - self.mean) / self.std).expand(-1, 3, -1, -1)
        logits, probs = defect_probabilities(self.network, images, self.tta)
        return logits[:, 1] - logits[:, 0], probs
