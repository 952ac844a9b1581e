"""One-pass CAM extraction against pytorch-grad-cam and torchcam, in one process, on one batch.

Times (a) defectcam's compute_cams for 3 methods x 4 layers, (b) pytorch-grad-cam with one CAM
object per (method, layer), (c) torchcam's multi-layer extractor (one call per method),
(d) a bare forward + .backward() and (e) a bare forward, on a random-init ResNet (eval mode);
prints seconds, speed ratios and the minimum Pearson correlation of our maps with
pytorch-grad-cam's. Writes no files.

    .venv/bin/python benchmarks/bench_cams.py --images 4 --size 256
"""

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from defectcam.cams import compute_cams, scoring_maps
from defectcam.evaluation.latency import synchronize

LAYERS = ("layer1", "layer2", "layer3", "layer4")
METHODS = ("gradcam", "gradcampp", "layercam")
MODELS = ("resnet18", "resnet34", "resnet50", "resnet101")
Maps = dict[str, dict[str, Tensor]]
TARGET = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line -> options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="batch size")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per variant (best is reported)")
    parser.add_argument("--model", default="resnet50", choices=MODELS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: os.cpu_count())")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_model(name: str, images: Tensor) -> nn.Module:
    """Random-init 2-class ResNet in eval mode, BN statistics taken from the batch (untimed)."""
    model = getattr(torchvision.models, name)(num_classes=2).to(images.device)
    model.train()
    with torch.no_grad():
        # Default BN statistics blow activations up and zero most maps; the timings do not care,
        # but the equal-maps check needs maps that vary.
        model(images)
        model.fc.weight[1].abs_()
    return model.eval()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Wall seconds of one call (CUDA synchronized) -> (seconds, result)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def best_times(
    variants: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> tuple[dict[str, float], dict[str, object]]:
    """Variants -> (best wall seconds over `repeats` rounds, last result) per variant."""
    # Rounds interleave the variants, so a burst of load on a shared machine hits all alike.
    best = dict.fromkeys(variants, float("inf"))
    results: dict[str, object] = {}
    for round_index in range(repeats):
        for name, fn in variants.items():
            seconds, results[name] = timed(fn, device)
            best[name] = min(best[name], seconds)
            # Progress on stderr: pytorch-grad-cam alone takes minutes at 8 x 512 px on a CPU.
            progress = f"  [round {round_index + 1}/{repeats}] {name}: {seconds:.3f} s"
            print(progress, file=sys.stderr, flush=True)
    return best, results


def run_ours(model: nn.Module, images: Tensor) -> Maps:
    """(a) one forward + one backward, 3 methods x 4 raw maps."""
    return compute_cams(model, images, LAYERS, METHODS, target_class=TARGET)


def run_ours_upsampled(model: nn.Module, images: Tensor, size: tuple[int, int]) -> Maps:
    """(a+) the same, then every map upsampled and min-max normalized to the input size."""
    raw = run_ours(model, images)
    return {method: {layer: scoring_maps(m, size) for layer, m in d.items()} for method, d in raw.items()}


def run_pytorch_grad_cam(
    model: nn.Module, images: Tensor, methods: tuple[str, ...] = METHODS, layers: tuple[str, ...] = LAYERS
) -> dict[str, dict[str, np.ndarray]]:
    """(b) one pytorch-grad-cam object (one forward + backward) per (method, layer)."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "layercam": LayerCAM}
    targets = [ClassifierOutputTarget(TARGET)] * len(images)
    maps: dict[str, dict[str, np.ndarray]] = {method: {} for method in methods}
    for method in methods:
        for layer in layers:
            with classes[method](model=model, target_layers=[model.get_submodule(layer)]) as cam:
                maps[method][layer] = cam(input_tensor=images, targets=targets)
    return maps


def run_torchcam(model: nn.Module, images: Tensor, methods: tuple[str, ...] = METHODS) -> list[list[Tensor]]:
    """(c) torchcam: one extractor over the 4 layers (one forward + backward) per method."""
    from torchcam.methods import GradCAM, GradCAMpp, LayerCAM

    classes = {"gradcam": GradCAM, "gradcampp": GradCAMpp, "layercam": LayerCAM}
    maps = []
    for extractor_class in (classes[method] for method in methods):
        with extractor_class(model, target_layer=list(LAYERS)) as extractor:
            scores = model(images)
            maps.append(extractor(class_idx=TARGET, scores=scores))
    return maps


def run_forward_backward(model: nn.Module, images: Tensor) -> None:
    """(d) the baseline: forward and .backward() of the target logits."""
    model.zero_grad(set_to_none=True)
    model(images)[:, TARGET].sum().backward()
    model.zero_grad(set_to_none=True)


def run_forward(model: nn.Module, images: Tensor) -> Tensor:
    """(e) forward alone, no graph."""
    with torch.no_grad():
        return model(images)


def min_pearson(
    ours: Maps, reference: dict[str, dict[str, np.ndarray]], size: int
) -> tuple[float, int]:
    """Min Pearson over images x methods x layers of our upsampled maps vs reference -> (r, #flat pairs).

    Two flat maps that are equal count as r = 1 (a correlation is undefined there); a flat map
    against a varying one counts as r = 0.
    """
    worst, flat = 1.0, 0
    for method, per_layer in reference.items():
        for layer, ref_maps in per_layer.items():
            mine = scoring_maps(ours[method][layer], (size, size)).cpu().double().flatten(1)
            ref = torch.from_numpy(ref_maps).double().flatten(1)
            for a, b in zip(mine, ref):
                if a.std() == 0 or b.std() == 0:
                    flat += 1
                    worst = min(worst, 1.0 if torch.allclose(a, b, atol=1e-6) else 0.0)
                    continue
                worst = min(worst, float(torch.corrcoef(torch.stack([a, b]))[0, 1]))
    return worst, flat


def warm_up(model: nn.Module, images: Tensor) -> None:
    """Run every code path once at full shape (oneDNN primitives, thread pools, lazy imports)."""
    run_ours(model, images)
    run_pytorch_grad_cam(model, images, methods=("gradcam",), layers=("layer4",))  # 1 of 12 objects
    run_torchcam(model, images, methods=("gradcam",))  # 1 of 3 calls
    run_forward_backward(model, images)
    run_forward(model, images)


def main(argv: list[str] | None = None) -> None:
    """Run the variants on one batch and print the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    images = torch.randn(args.images, 3, args.size, args.size, device=device)
    model = build_model(args.model, images)
    size = (args.size, args.size)
    variants: dict[str, Callable[[], object]] = {
        "ours": lambda: run_ours(model, images),
        "ours_up": lambda: run_ours_upsampled(model, images, size),
        "pgc": lambda: run_pytorch_grad_cam(model, images),
        "torchcam": lambda: run_torchcam(model, images),
        "fwd_bwd": lambda: run_forward_backward(model, images),
        "fwd": lambda: run_forward(model, images),
    }
    load_before = os.getloadavg()[0]
    print("  warming up ...", file=sys.stderr, flush=True)
    warm_up(model, images)
    timings, results = best_times(variants, args.repeats, device)
    worst, flat = min_pearson(results["ours"], results["pgc"], args.size)
    print_table(args, timings, worst, flat, (load_before, os.getloadavg()[0]))


def print_table(
    args: argparse.Namespace, t: dict[str, float], worst: float, flat: int, load: tuple[float, float]
) -> None:
    """Seconds per variant, ratios and the equal-maps check."""
    print(
        f"CAM benchmark: {args.model} (random init, eval), {args.images} images {args.size}x{args.size}, "
        f"{args.device}, {torch.get_num_threads()} threads, best of {args.repeats} after 1 warm-up"
    )
    # Other processes on a shared machine inflate every number; the load average says how much.
    print(f"  1-min load average: {load[0]:.2f} before, {load[1]:.2f} after ({os.cpu_count()} CPUs)")
    rows = [
        ("(a)  ours: compute_cams, one pass, 3 methods x 4 layers, raw", t["ours"]),
        ("(a+) ours + scoring_maps to input size", t["ours_up"]),
        ("(b)  pytorch-grad-cam: 12 CAM objects (method x layer)", t["pgc"]),
        ("(c)  torchcam: multi-layer extractor, 3 calls", t["torchcam"]),
        ("(d)  forward + .backward() (baseline)", t["fwd_bwd"]),
        ("(e)  forward alone (no_grad)", t["fwd"]),
    ]
    for label, seconds in rows:
        print(f"  {label:<62} {seconds:8.3f} s")
    print(f"  {'pytorch-grad-cam / ours':<62} {t['pgc'] / t['ours']:8.1f} x   (goal >= 15x)")
    print(f"  {'torchcam / ours':<62} {t['torchcam'] / t['ours']:8.1f} x")
    print(f"  {'ours / (forward+backward)':<62} {t['ours'] / t['fwd_bwd']:8.2f} x   (goal <= 0.8x)")
    verdict = "equal maps" if worst >= 0.99 else "MAPS DIFFER"
    print(
        f"  {'min Pearson(ours upsampled, pytorch-grad-cam)':<62} {worst:8.4f}     "
        f"({verdict}; >= 0.99 required; {flat} flat map pairs)"
    )


if __name__ == "__main__":
    main()
