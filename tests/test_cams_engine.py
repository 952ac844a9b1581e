"""The one-pass extractor: pass count, hook hygiene, mode/grad flags, targets, shapes, errors, memory."""

import gc
import warnings
import weakref


import pytest
import torch
import torchvision
from torch import Tensor, nn

from cam_models import calibrated_resnet
from defectcam.cams import METHODS, CamResult, compute_cams, extract_cams, scoring_maps
from defectcam.errors import ConfigError, ModelError

LAYERS = ("layer1", "layer2", "layer3", "layer4")


pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """conv -> ReLU ('features', (N, 4, h, w)) -> global average pool -> linear (2 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Boom(nn.Module):
    """A layer whose forward fails."""

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return calibrated_resnet("resnet18", 64)


@pytest.fixture(scope="module")
def images() -> Tensor:
    torch.manual_seed(7)
    return torch.randn(2, 3, 64, 64)


def assert_no_hooks(model: nn.Module) -> None:
    """No forward, forward-pre or backward hook on any module."""
    for name, module in model.named_modules():
        assert not module._forward_hooks, name
        assert not module._forward_pre_hooks, name
        assert not module._backward_hooks, name


def flags(model: nn.Module) -> tuple[list[bool], list[bool]]:
    """Per-module training flags and per-parameter requires_grad flags."""
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def test_one_forward_and_one_backward(
    resnet18: nn.Module, images: Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwards, grads = [], []
    real_grad = torch.autograd.grad

    def counting_grad(*args: object, **kwargs: object) -> tuple[Tensor, ...]:
        grads.append(1)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    handle = resnet18.register_forward_hook(lambda *_: forwards.append(1))
    try:
        maps = compute_cams(resnet18, images, LAYERS, METHODS)
    finally:
        handle.remove()
    assert len(forwards) == 1 and len(grads) == 1
    assert set(maps) == set(METHODS) and all(set(per_layer) == set(LAYERS) for per_layer in maps.values())
    # autograd.grad w.r.t. activations only: no weight gradient is computed or accumulated.
    assert all(p.grad is None for p in resnet18.parameters())


def test_no_hooks_left_after_success(resnet18: nn.Module, images: Tensor) -> None:
    compute_cams(resnet18, images, LAYERS, METHODS, output_size=(64, 64))
    assert_no_hooks(resnet18)


def test_no_hooks_left_and_mode_restored_after_exception_mid_forward(images: Tensor) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2).train()
    model.layer3.append(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        compute_cams(model, images, LAYERS, METHODS)
    assert_no_hooks(model)
    assert all(m.training for m in model.modules())


def test_no_hooks_left_after_error_raised_in_hook(resnet18: nn.Module, images: Tensor) -> None:
    with pytest.raises(ConfigError, match="'fc' must output a \\(N, K, h, w\\)"):
        compute_cams(resnet18, images, ["layer1", "fc"], ["gradcam"])
    assert_no_hooks(resnet18)


def test_mode_and_requires_grad_restored(images: Tensor) -> None:
    model = calibrated_resnet("resnet18", 64)
    eval_maps = compute_cams(model, images, LAYERS, METHODS)
    model.train()
    model.layer2.eval()  # a mixed state must come back module by module
    for p in [*model.conv1.parameters(), *model.layer1.parameters()]:
        p.requires_grad_(False)
    before = flags(model)
    running_mean = model.bn1.running_mean.clone()
    train_maps = compute_cams(model, images, LAYERS, METHODS)
    assert flags(model) == before
    # The pass ran in eval mode: BN statistics untouched, maps identical to the eval-mode ones.
    assert torch.equal(model.bn1.running_mean, running_mean)
    for method in METHODS:
        for layer in LAYERS:
            torch.testing.assert_close(train_maps[method][layer], eval_maps[method][layer])


def test_frozen_model_and_outer_no_grad(resnet18: nn.Module, images: Tensor) -> None:
    expected = compute_cams(resnet18, images, LAYERS, METHODS)
    frozen = calibrated_resnet("resnet18", 64).requires_grad_(False)
    with torch.no_grad():
        got = compute_cams(frozen, images, LAYERS, METHODS)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not images.requires_grad
    for method in METHODS:
        for layer in LAYERS:
            torch.testing.assert_close(got[method][layer], expected[method][layer])
            assert not got[method][layer].requires_grad


def test_frozen_layer_followed_by_inplace_op() -> None:
    torch.manual_seed(0)
    model = Tiny()
    model.features[1] = nn.ReLU(inplace=True)  # rewrites the hooked conv output in place
    x = torch.randn(2, 3, 16, 16)
    expected = compute_cams(model, x, ["features.0"], METHODS)
    got = compute_cams(model.requires_grad_(False), x, ["features.0"], METHODS)
    for method in METHODS:
        assert expected[method]["features.0"].any()
        torch.testing.assert_close(got[method]["features.0"], expected[method]["features.0"])


def test_inference_mode_is_refused_but_inference_tensors_are_accepted(resnet18: nn.Module) -> None:
    with torch.inference_mode():
        frozen_input = torch.randn(1, 3, 64, 64)
        with pytest.raises(RuntimeError, match="inference_mode"):
            compute_cams(resnet18, frozen_input, ["layer4"], ["gradcam"])
    maps = compute_cams(resnet18, frozen_input, ["layer4"], ["gradcam"])
    assert maps["gradcam"]["layer4"].shape == (1, 2, 2)


@pytest.mark.parametrize("zeroed", ["gradients", "activations"])
def test_zero_gradients_or_activations_give_zero_maps(zeroed: str, images: Tensor) -> None:
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        target = model.fc if zeroed == "gradients" else model.features[0]
        target.weight.zero_()
        target.bias.zero_()
    for size in (None, (64, 64)):
        maps = compute_cams(model, images, ["features"], METHODS, output_size=size)
        for method in METHODS:
            cam = maps[method]["features"]
            assert torch.isfinite(cam).all() and not cam.any(), method


def test_extract_cams_returns_logits_of_the_same_pass(resnet18: nn.Module, images: Tensor) -> None:
    result = extract_cams(resnet18, images, ["layer4"], ["gradcam", "layercam"])
    assert isinstance(result, CamResult)
    with torch.no_grad():
        expected = resnet18(images)
    torch.testing.assert_close(result.logits, expected)
    assert not result.logits.requires_grad
    assert set(result.maps) == {"gradcam", "layercam"}


def test_per_image_targets(resnet18: nn.Module, images: Tensor) -> None:
    per_target = {t: compute_cams(resnet18, images, LAYERS, METHODS, target_class=t) for t in (0, 1)}
    mixed = compute_cams(resnet18, images, LAYERS, METHODS, target_class=torch.tensor([1, 0]))
    for method in METHODS:
        for layer in LAYERS:
            torch.testing.assert_close(mixed[method][layer][0], per_target[1][method][layer][0])
            torch.testing.assert_close(mixed[method][layer][1], per_target[0][method][layer][1])


def test_predicted_target_is_the_argmax(resnet18: nn.Module, images: Tensor) -> None:
    result = extract_cams(resnet18, images, LAYERS, METHODS, target_class="predicted")
    explicit = extract_cams(resnet18, images, LAYERS, METHODS, target_class=result.logits.argmax(1))
    for method in METHODS:
        for layer in LAYERS:
            torch.testing.assert_close(result.maps[method][layer], explicit.maps[method][layer])


def test_raw_shapes_per_layer_and_module_paths_resnet50() -> None:
    model = calibrated_resnet("resnet50", 128)
    torch.manual_seed(1)
    layers = ["layer1", "layer2", "layer3", "layer3.4", "layer4"]
    maps = compute_cams(model, torch.randn(2, 3, 128, 128), layers, ["gradcam", "layercam"])
    expected = {"layer1": 32, "layer2": 16, "layer3": 8, "layer3.4": 8, "layer4": 4}
    for method in ("gradcam", "layercam"):
        for layer, side in expected.items():
            cam = maps[method][layer]
            assert cam.shape == (2, side, side) and cam.dtype == torch.float32
            assert (cam >= 0).all()  # ReLU applied, not normalized
    assert float(maps["layercam"]["layer3.4"].max()) > 0
    assert not torch.equal(maps["layercam"]["layer3.4"], maps["layercam"]["layer3"])


def test_output_size_maps_are_normalized(resnet18: nn.Module, images: Tensor) -> None:
    maps = compute_cams(resnet18, images, LAYERS, METHODS, output_size=(48, 40))
    for method in METHODS:
        for layer in LAYERS:
            cam = maps[method][layer]
            assert cam.shape == (2, 48, 40) and cam.dtype == torch.float32
            assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
            peaks = cam.flatten(1).amax(1)
            assert ((peaks > 0.999) | (peaks == 0)).all()


def test_single_names_and_duplicates(resnet18: nn.Module, images: Tensor) -> None:
    maps = compute_cams(resnet18, images, "layer4", ["gradcam", "gradcam"])
    assert list(maps) == ["gradcam"] and list(maps["gradcam"]) == ["layer4"]


def test_unknown_layer_and_method(resnet18: nn.Module, images: Tensor) -> None:
    with pytest.raises(ConfigError, match="'layer5'.*layer4"):
        compute_cams(resnet18, images, ["layer1", "layer5"], ["gradcam"])
    with pytest.raises(ConfigError, match="'scorecam'.*gradcam, gradcampp, layercam, xgradcam, hirescam"):
        compute_cams(resnet18, images, ["layer1"], ["gradcam", "scorecam"])
    with pytest.raises(ConfigError):
        compute_cams(resnet18, images, [], ["gradcam"])
    assert_no_hooks(resnet18)


@pytest.mark.parametrize(
    "target",
    ["argmax", 2, -1, True, 1.0, torch.tensor([0, 1, 1]), torch.tensor([0.0, 1.0]), torch.tensor([0, 5])],
)
def test_bad_targets(resnet18: nn.Module, images: Tensor, target: object) -> None:
    with pytest.raises(ConfigError, match="target_class"):
        compute_cams(resnet18, images, ["layer4"], ["gradcam"], target_class=target)


@pytest.mark.parametrize(
    "bad",
    [torch.randn(3, 64, 64), torch.zeros(2, 3, 64, 64, dtype=torch.uint8), [[0.0]], torch.randn(0, 3, 8, 8)],
)
def test_bad_images(resnet18: nn.Module, bad: object) -> None:
    with pytest.raises(ValueError, match="images"):
        compute_cams(resnet18, bad, ["layer4"], ["gradcam"])


def test_bad_output_size_and_bad_model_output(resnet18: nn.Module, images: Tensor) -> None:
    with pytest.raises(ConfigError, match="output size"):
        compute_cams(resnet18, images, ["layer4"], ["gradcam"], output_size=(64,))
    with pytest.raises(ModelError, match="logits"):
        compute_cams(resnet18.layer4, torch.randn(1, 256, 8, 8), ["0"], ["gradcam"])


def test_scoring_maps_float16_and_flat_maps() -> None:
    torch.manual_seed(0)
    raw = torch.rand(3, 8, 8) * 5
    raw[1] = 0.0
    raw[2] = 3.0
    half = scoring_maps(raw.half(), (32, 32))
    full = scoring_maps(raw, (32, 32))
    assert half.dtype == torch.float32 and half.shape == (3, 32, 32)
    torch.testing.assert_close(half, full, atol=5e-3, rtol=0)
    assert float(full[0].min()) == 0.0 and float(full[0].max()) == pytest.approx(1.0, abs=1e-6)
    assert not full[1:].any() and torch.isfinite(full).all()  # all-zero and constant maps -> 0


def live_tensors() -> int:
    """Number of tensors the garbage collector can see."""
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on some torch module objects warns
        return sum(1 for obj in gc.get_objects() if isinstance(obj, Tensor))


def test_no_memory_growth_and_activations_freed(resnet18: nn.Module, images: Tensor) -> None:
    seen: list[weakref.ref] = []
    handle = resnet18.layer1.register_forward_hook(lambda _m, _i, out: seen.append(weakref.ref(out)))
    try:
        compute_cams(resnet18, images, LAYERS, METHODS)  # warm-up: lazy caches
        baseline = live_tensors()
        for _ in range(3):
            maps = compute_cams(resnet18, images, LAYERS, METHODS, output_size=(64, 64))
            del maps
        assert live_tensors() <= baseline
    finally:
        handle.remove()
    gc.collect()
    assert len(seen) == 4 and all(ref() is None for ref in seen)  # no hooked activation survives


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_maps_stay_on_device(images: Tensor) -> None:
    model = calibrated_resnet("resnet18", 64).cuda()
    cuda_images = images.cuda()
    result = extract_cams(model, cuda_images, LAYERS, METHODS, target_class=torch.tensor([1, 0]))
    assert result.logits.is_cuda
    cpu = extract_cams(model.cpu(), images, LAYERS, METHODS, target_class=torch.tensor([1, 0]))
    for method in METHODS:
        for layer in LAYERS:
            assert result.maps[method][layer].is_cuda
            on_gpu, on_cpu = result.maps[method][layer].cpu(), cpu.maps[method][layer]
            torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-4 * float(on_cpu.max()))
    maps = compute_cams(model.cuda(), cuda_images, LAYERS, METHODS, output_size=(64, 64))
    assert all(cam.is_cuda for per_layer in maps.values() for cam in per_layer.values())
