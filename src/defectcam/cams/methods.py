"""CAM methods as pure functions of one layer's activations A and gradients G = dy^c/dA.

Every method maps A, G of shape (N, K, h, w) to a map (N, h, w) *before* the final ReLU; the
extractor applies the ReLU, so a method is only its weighting. eps values are pytorch-grad-cam's
(docs/cam_math.md): they dominate some denominators, so changing them changes the maps.
Adding a method: write one function below and add it to ``METHOD_FUNCS``.
"""

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import torch
from torch import Tensor

from defectcam.errors import ConfigError

CamFn = Callable[[Tensor, Tensor], Tensor]

GRADCAMPP_EPS = 1e-6
XGRADCAM_EPS = 1e-7


def _combine_channels(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_k w_k A_k: weights (N, K), activations (N, K, h, w) -> (N, h, w)."""
    # einsum lowers to one batched matmul: no (N, K, h, w) temporary.
    return torch.einsum("nk,nkhw->nhw", weights, activations)


def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM, (N,K,h,w) x2 -> (N,h,w): sum_k w_k A_k with w_k = mean_ij G_kij.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017.
    """
    return _combine_channels(gradients.mean(dim=(2, 3)), activations)


def gradcampp(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++, (N,K,h,w) x2 -> (N,h,w): sum_k w_k A_k, w_k = sum_ij alpha_kij ReLU(G_kij).

    alpha_kij = G^2 / (2 G^2 + (sum_ab A_kab) G^3 + eps), eps = 1e-6 (alpha = 0 where G = 0).
    Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, eq. 19 (the form pytorch-grad-cam implements).
    """
    act_sum = activations.sum(dim=(2, 3), keepdim=True)
    grad_sq = gradients * gradients
    # 2 G^2 + S G^3 + eps written as G^2 (2 + S G) + eps: two full-size temporaries, not five.
    denom = (act_sum * gradients).add_(2.0).mul_(grad_sq).add_(GRADCAMPP_EPS)
    # Where G = 0 the numerator G^2 ReLU(G) is 0 and denom = eps > 0, so alpha = 0 holds as is.
    weights = grad_sq.mul_(gradients.clamp(min=0)).div_(denom).sum(dim=(2, 3))
    return _combine_channels(weights, activations)


def layercam(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM, (N,K,h,w) x2 -> (N,h,w): sum_k ReLU(G_kij) A_kij (one weight per location).

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    IEEE TIP 2021, eq. 7-8.
    """
    return (gradients.clamp(min=0) * activations).sum(dim=1)


def xgradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """XGrad-CAM, (N,K,h,w) x2 -> (N,h,w): sum_k w_k A_k, w_k = sum_ij A_kij G_kij / (sum_ab A_kab + eps).

    eps = 1e-7. Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation
    of CNNs", BMVC 2020.
    """
    act_sum = activations.sum(dim=(2, 3))
    weights = (activations * gradients).sum(dim=(2, 3)) / (act_sum + XGRADCAM_EPS)
    return _combine_channels(weights, activations)


def hirescam(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM, (N,K,h,w) x2 -> (N,h,w): sum_k G_kij A_kij (element-wise gradient weights).

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
    neural networks", arXiv:2011.08891, 2020.
    """
    return (gradients * activations).sum(dim=1)


METHOD_FUNCS: Mapping[str, CamFn] = MappingProxyType(
    {
        "gradcam": gradcam,
        "gradcampp": gradcampp,
        "layercam": layercam,
        "xgradcam": xgradcam,
        "hirescam": hirescam,
    }
)
METHODS: tuple[str, ...] = tuple(METHOD_FUNCS)


def resolve_methods(names: Iterable[str] | str) -> dict[str, CamFn]:
    """Method names (duplicates dropped, order kept) -> {name: function}; ConfigError if unknown."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ConfigError(f"no CAM method requested; choose from {', '.join(METHODS)}")
    unknown = [name for name in names if name not in METHOD_FUNCS]
    if unknown:
        raise ConfigError(
            f"unknown CAM method(s) {', '.join(map(repr, unknown))}; choose from {', '.join(METHODS)}"
        )
    return {name: METHOD_FUNCS[name] for name in dict.fromkeys(names)}
