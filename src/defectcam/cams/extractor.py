"""One-pass CAM extraction: one forward and one backward for any set of methods x layers.

Forward hooks (registered in a context manager, removed on any exit) keep each requested layer's
output A. The target logits are summed over the batch and differentiated with
``torch.autograd.grad`` with respect to the hooked outputs only, which skips every weight
gradient and the part of the network below the shallowest hooked layer. Every method is then
evaluated from the same detached A and G (docs/cam_math.md, "One pass for everything").
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from difflib import get_close_matches

import torch
from torch import Tensor, nn

from defectcam.cams.methods import CamFn, resolve_methods
from defectcam.cams.normalize import check_size, scoring_maps
from defectcam.errors import ConfigError, ModelError

Target = int | str | Tensor
ForwardHook = Callable[[nn.Module, tuple, object], Tensor | None]


@dataclass(frozen=True)
class CamResult:
    """Raw maps[method][layer] (N, h, w) and the logits (N, C) of the same forward pass, detached."""

    maps: dict[str, dict[str, Tensor]]
    logits: Tensor


def _check_images(images: Tensor) -> None:
    """Raise ValueError unless images is a non-empty float (N, C, H, W) tensor."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) with N > 0, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got {images.dtype}")


def _names(value: Iterable[str] | str, what: str) -> list[str]:
    """A name or names -> list without duplicates, order kept; ConfigError when empty."""
    names = list(dict.fromkeys([value] if isinstance(value, str) else value))
    if not names:
        raise ConfigError(f"no {what} requested")
    return names


def _resolve_layers(model: nn.Module, layers: Iterable[str] | str) -> dict[str, nn.Module]:
    """Module paths ('layer4', 'layer3.4') -> {path: module}; ConfigError naming unknown paths."""
    valid = [name for name, _ in model.named_modules() if name]
    resolved: dict[str, nn.Module] = {}
    for path in _names(layers, "layer"):
        try:
            resolved[path] = model.get_submodule(path)
        except AttributeError:
            close = get_close_matches(path, valid, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"unknown layer {path!r}{hint}; valid module paths: {', '.join(valid)}"
            ) from None
    return resolved


def _check_target(target_class: Target, batch: int) -> None:
    """Raise ConfigError unless target_class is an int, 'predicted' or an integer tensor (N,)."""
    kinds = f"target_class must be an int, 'predicted' or a tensor ({batch},), got {target_class!r}"
    if isinstance(target_class, str):
        if target_class != "predicted":
            raise ConfigError(kinds)
    elif isinstance(target_class, Tensor):
        if target_class.is_floating_point() or target_class.is_complex() or target_class.dtype == torch.bool:
            raise ConfigError(f"target_class tensor must hold class indices (int), got {target_class.dtype}")
        if tuple(target_class.shape) != (batch,):
            raise ConfigError(f"target_class tensor must be ({batch},), got {tuple(target_class.shape)}")
    elif not isinstance(target_class, int) or isinstance(target_class, bool):
        raise ConfigError(kinds)


def _target_indices(target_class: Target, logits: Tensor, check_range: bool = True) -> Tensor:
    """Checked target_class -> long tensor (N,) of class indices on the logits' device; check_range=False skips the
    range check of a tensor target (data-dependent: a device sync, and a stop for graph tracing)."""
    batch, classes = logits.shape
    if isinstance(target_class, str):
        return logits.detach().argmax(dim=1)
    if isinstance(target_class, Tensor):
        targets = target_class.to(device=logits.device, dtype=torch.long)
        bad = check_range and bool(((targets < 0) | (targets >= classes)).any())
    else:
        bad = not 0 <= target_class < classes
        targets = torch.full((batch,), target_class, dtype=torch.long, device=logits.device)
    if bad:
        raise ConfigError(f"target_class {target_class!r} is out of range for a model with {classes} classes")
    return targets


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own flag on exit."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def _activation_hook(name: str, store: dict[str, Tensor]) -> ForwardHook:
    """Forward hook that records the output of layer `name` in store, graph attached."""

    def hook(_module: nn.Module, _inputs: tuple, output: object) -> Tensor | None:
        if not isinstance(output, Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ConfigError(f"layer {name!r} must output a (N, K, h, w) tensor, got {shape}")
        if name in store:
            raise ConfigError(f"layer {name!r} ran twice in one forward pass; pick a module that runs once")
        if output.requires_grad:
            store[name] = output
            return None
        # Frozen model and plain input: start a graph here so the layers above record theirs.
        # The clone (not the leaf) is returned so later in-place ops (ReLU) stay legal.
        output = output.detach().requires_grad_().clone()
        store[name] = output
        return output

    return hook


@contextmanager
def _hooked(modules: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Register forward hooks on modules; yield {path: output}; remove hooks and refs on exit."""
    store: dict[str, Tensor] = {}
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(_activation_hook(name, store)))
        yield store
    finally:
        for handle in handles:
            handle.remove()
        store.clear()


def _check_logits(logits: object, batch: int) -> Tensor:
    """Model output -> logits (N, C); ModelError if the model does not return one."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ModelError(f"model must return logits of shape ({batch}, num_classes), got {shape}")
    return logits


def _gradients(score: Tensor, activations: list[Tensor], names: list[str]) -> list[Tensor]:
    """d score / d A for every hooked output; zeros where A does not reach the score."""
    if not score.requires_grad:
        raise ConfigError(f"none of the layers {', '.join(names)} feeds the model's logits")
    # materialize_grads: a layer the score does not depend on has G = 0, hence an all-zero map.
    return list(torch.autograd.grad(score, activations, allow_unused=True, materialize_grads=True))


def _layer_maps(activations: Tensor, gradients: Tensor, methods: dict[str, CamFn]) -> dict[str, Tensor]:
    """A, G (N, K, h, w) of one layer -> {method: ReLU'd raw map (N, h, w)}, float32."""
    # float32 even under autocast: in float16, G^3 underflows and eps = 1e-6 is subnormal.
    a, g = activations.float(), gradients.float()
    return {name: torch.relu(fn(a, g)) for name, fn in methods.items()}


def _run_pass(
    model: nn.Module, images: Tensor, modules: dict[str, nn.Module], target_class: Target, check_range: bool = True
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """One forward + one autograd.grad -> (logits (N, C), [A_l], [G_l]) detached, in modules' order."""
    names = list(modules)
    with _eval_mode(model), _hooked(modules) as store, torch.enable_grad():
        logits = _check_logits(model(images), images.shape[0])
        missing = [name for name in names if name not in store]
        if missing:
            raise ConfigError(f"layer(s) {', '.join(missing)} did not run in the model's forward pass")
        activations = [store[name] for name in names]
        targets = _target_indices(target_class, logits, check_range)
        score = logits.gather(1, targets[:, None]).sum()
        gradients = _gradients(score, activations, names)
    # Detached copies only: nothing returned keeps the (already freed) graph alive.
    return logits.detach(), [a.detach() for a in activations], [g.detach() for g in gradients]


def extract_cams(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str] | str,
    methods: Sequence[str] | str,
    target_class: Target = 1,
    check_range: bool = True,
) -> CamResult:
    """Images (N, C, H, W) -> raw maps[method][layer] (N, h_l, w_l) and logits (N, C), one pass.

    check_range=False: a tensor target_class is known to hold valid classes (an argmax of this model's logits, as
    test-time augmentation passes on), so its range is not checked; the check reads the values, which a traced
    graph (defectcam-export) cannot do."""
    _check_images(images)
    method_fns = resolve_methods(methods)
    modules = _resolve_layers(model, layers)
    _check_target(target_class, images.shape[0])
    if torch.is_inference_mode_enabled():
        raise RuntimeError("CAMs need autograd: call compute_cams outside torch.inference_mode()")
    if images.is_inference():
        images = images.clone()  # inference tensors cannot enter an autograd graph
    logits, activations, gradients = _run_pass(model, images, modules, target_class, check_range)
    maps: dict[str, dict[str, Tensor]] = {name: {} for name in method_fns}
    for layer in modules:
        # pop: A and G of a layer are freed as soon as its maps exist, not at the end.
        layer_maps = _layer_maps(activations.pop(0), gradients.pop(0), method_fns)
        for method, cam in layer_maps.items():
            maps[method][layer] = cam
    return CamResult(maps=maps, logits=logits)


def compute_cams(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str] | str,
    methods: Sequence[str] | str,
    target_class: Target = 1,
    output_size: Sequence[int] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Images (N, C, H, W) -> maps[method][layer]: raw (N, h, w), or (N, H, W) in [0, 1] at output_size."""
    size = None if output_size is None else check_size(output_size)
    maps = extract_cams(model, images, layers, methods, target_class).maps
    if size is None:
        return maps
    return {
        method: {layer: scoring_maps(raw, size) for layer, raw in per_layer.items()}
        for method, per_layer in maps.items()
    }
