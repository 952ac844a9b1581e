"""CAM maps against pytorch-grad-cam (upsampled, normalized) and against hand-written formulas (raw)."""

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cam_models import calibrated_resnet
from defectcam.cams import METHODS, compute_cams, extract_cams

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

SIZE = 128
LAYERS = ("layer1", "layer2", "layer3", "layer4")
# On a random-init ResNet-50 the Grad-CAM/XGrad-CAM layer3 maps are all zero (no positive
# evidence), which would make a correlation vacuous; ResNet-18 covers the full grid.
RESNET50_LAYERS = ("layer1", "layer2", "layer4")
REFERENCE = {
    "gradcam": pgc.GradCAM,
    "gradcampp": pgc.GradCAMPlusPlus,
    "layercam": pgc.LayerCAM,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
}




pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images() -> Tensor:
    """Two random images (2, 3, SIZE, SIZE)."""
    torch.manual_seed(123)
    return torch.randn(2, 3, SIZE, SIZE)


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return calibrated_resnet("resnet18")


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    return calibrated_resnet("resnet50")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps of equal shape."""
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def assert_nontrivial(maps: np.ndarray) -> None:
    """Every per-image map (N, H, W) must vary: a constant map makes a correlation meaningless."""
    assert np.isfinite(maps).all()
    assert (maps.reshape(len(maps), -1).std(axis=1) > 1e-6).all(), "degenerate (constant) CAM"


def reference_cam(model: nn.Module, images: Tensor, method: str, layer: str) -> np.ndarray:
    """pytorch-grad-cam map (N, H, W) for class 1, one CAM object per (method, layer)."""
    targets = [ClassifierOutputTarget(1)] * len(images)
    with REFERENCE[method](model=model, target_layers=[model.get_submodule(layer)]) as cam:
        maps = cam(input_tensor=images, targets=targets)
    model.zero_grad(set_to_none=True)  # pytorch-grad-cam calls .backward(): drop weight grads
    return maps


def check_against_reference(model: nn.Module, images: Tensor, layers: tuple[str, ...]) -> None:
    """Pearson >= 0.99 per image, method and layer between our maps and pytorch-grad-cam's."""
    ours = compute_cams(model, images, layers, METHODS, output_size=(SIZE, SIZE))
    for method in METHODS:
        for layer in layers:
            mine, ref = ours[method][layer].numpy(), reference_cam(model, images, method, layer)
            assert mine.shape == ref.shape == (len(images), SIZE, SIZE)
            assert_nontrivial(mine)
            assert_nontrivial(ref)
            for i in range(len(images)):
                r = pearson(mine[i], ref[i])
                assert r >= 0.99, f"{method}/{layer} image {i}: pearson {r:.4f}"


def test_every_method_has_an_oracle() -> None:
    assert set(METHODS) == set(REFERENCE)


def test_matches_pytorch_grad_cam_resnet18(resnet18: nn.Module, images: Tensor) -> None:
    check_against_reference(resnet18, images, LAYERS)


def test_matches_pytorch_grad_cam_resnet50(resnet50: nn.Module, images: Tensor) -> None:
    check_against_reference(resnet50, images, RESNET50_LAYERS)


def hooked_activations_and_gradients(
    model: nn.Module, images: Tensor, layers: tuple[str, ...], target: int
) -> dict[str, tuple[Tensor, Tensor]]:
    """Independent A, G per layer in float64: plain hooks, retain_grad and .backward()."""
    outputs: dict[str, Tensor] = {}
    def keep(name: str) -> Callable[[nn.Module, tuple, Tensor], None]:
        return lambda _module, _inputs, out: outputs.__setitem__(name, out)

    handles = [model.get_submodule(name).register_forward_hook(keep(name)) for name in layers]
    try:
        logits = model(images)
        for out in outputs.values():
            out.retain_grad()
        logits[:, target].sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    result = {name: (out.detach().double(), out.grad.double()) for name, out in outputs.items()}
    model.zero_grad(set_to_none=True)
    return result


def formula(method: str, a: Tensor, g: Tensor) -> Tensor:
    """The docs/cam_math.md table, written out literally: (N, K, h, w) x2 -> ReLU'd (N, h, w)."""
    spatial_sum = a.sum(dim=(2, 3), keepdim=True)
    if method == "gradcam":
        cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)
    elif method == "gradcampp":
        alpha = g**2 / (2 * g**2 + spatial_sum * g**3 + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
        cam = (weights * a).sum(1)
    elif method == "layercam":
        cam = (torch.relu(g) * a).sum(1)
    elif method == "xgradcam":
        weights = (a / (spatial_sum + 1e-7) * g).sum(dim=(2, 3), keepdim=True)
        cam = (weights * a).sum(1)
    elif method == "hirescam":
        cam = (g * a).sum(1)
    else:
        raise AssertionError(method)
    return torch.relu(cam)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("target", [1, 0])
def test_raw_maps_match_formulas(
    arch: str, target: int, images: Tensor, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(arch)
    layers = LAYERS + (("layer3.4",) if arch == "resnet50" else ())
    result = extract_cams(model, images, layers, METHODS, target_class=target)
    hooked = hooked_activations_and_gradients(model, images, layers, target)
    nontrivial = 0
    for layer, (a, g) in hooked.items():
        for method in METHODS:
            expected, mine = formula(method, a, g), result.maps[method][layer]
            assert mine.shape == expected.shape and mine.dtype == torch.float32
            scale = max(float(expected.abs().max()), 1e-12)
            torch.testing.assert_close(mine.double(), expected, rtol=1e-4, atol=1e-5 * scale)
            nontrivial += int(bool((expected.flatten(1).std(1) > 0).all()))
    # Most maps must carry signal, else this comparison could pass on zeros.
    assert nontrivial >= 0.75 * len(hooked) * len(METHODS)
