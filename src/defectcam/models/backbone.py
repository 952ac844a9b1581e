"""ResNet backbones from torchvision with a new 2-way head; weights never come from the network."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from defectcam.errors import ConfigError, ModelError, one_line

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
# torchvision's ImageNet weights per architecture; the file name is what torch.hub caches.
IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}


def build_backbone(
    arch: str = "resnet50",
    weights: str | None = "none",
    num_classes: int = 2,
    zero_init_residual: bool = False,
    torch_home: str | Path | None = None,
) -> nn.Module:
    """A torchvision ResNet with a `num_classes`-way head; weights: none | imagenet | path to a state dict."""
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: {arch!r} is not one of {', '.join(ARCHS)}")
    builder = getattr(torchvision.models, arch)
    weights = "none" if weights in (None, "none", "null", "") else str(weights)
    net = builder(weights=None, zero_init_residual=zero_init_residual and weights == "none")
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    if weights == "imagenet":
        load_state_dict_file(net, imagenet_file(arch, torch_home))
    elif weights != "none":
        load_state_dict_file(net, Path(weights).expanduser())
    return net


def imagenet_file(arch: str, torch_home: str | Path | None = None) -> Path:
    """The local file of torchvision's ImageNet weights; a one-line error naming it when it is absent."""
    url = IMAGENET_WEIGHTS[arch].url
    home = Path(torch_home).expanduser() if torch_home else Path(torch.hub.get_dir()).parent
    path = home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        raise ModelError(
            f"{path}: ImageNet weights for {arch} not found (no download at run time); "
            f"place the file there (from {url}), or use model.weights=none or model.weights=/path/to/state_dict.pth"
        )
    return path


def load_state_dict_file(net: nn.Module, path: Path) -> None:
    """Load a state-dict file safely (weights_only) into net; a head of another size is dropped (stays new)."""
    if not path.is_file():
        raise ModelError(f"{path}: weights file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ModelError(f"{path}: not a loadable state-dict file ({one_line(exc)})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ModelError(f"{path}: holds a {type(state).__name__}, not a state dict")
    own = net.state_dict()
    head_fits = all(k in state and state[k].shape == own[k].shape for k in own if k.startswith("fc."))
    state = {k: v for k, v in state.items() if head_fits or not k.startswith("fc.")}
    expected = {k: v for k, v in own.items() if head_fits or not k.startswith("fc.")}
    _check_keys(path, state, expected)
    net.load_state_dict(state, strict=False)


def _check_keys(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for key in expected:
        if key not in state:
            raise ModelError(f"{path}: key {key!r} of the model is missing from the file")
        if tuple(state[key].shape) != tuple(expected[key].shape):
            raise ModelError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, the model needs {tuple(expected[key].shape)}")
    unexpected = next((k for k in state if k not in expected), None)
    if unexpected is not None:
        raise ModelError(f"{path}: key {unexpected!r} does not belong to this model")

