"""Inference timing: per-image latency at batch 1 after warm-up (synchronized on CUDA) and batched throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a timer read before would time the launch only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def per_image_latency_ms(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, warmup: int = 5
) -> tuple[float, float]:
    """Mean and std (ms) of one forward per image of (N,C,H,W) images, batch 1, after `warmup` untimed passes."""
    device = images.device
    for i in range(min(warmup, len(images))):
        forward(images[i : i + 1])
    times = []
    for i in range(len(images)):
        synchronize(device)
        start = time.perf_counter()
        forward(images[i : i + 1])
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.fmean(times), statistics.stdev(times) if len(times) > 1 else 0.0


@torch.inference_mode()
def batched_predictions(
    forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, float]:
    """Defect probabilities (N,) over all batches and the throughput in images/s (transfer included)."""
    probabilities = []
    synchronize(device)
    start = time.perf_counter()
    for images in batches:
        probabilities.append(forward(images.to(device, non_blocking=True)).float().softmax(1)[:, 1])
    result = torch.cat(probabilities).cpu()
    elapsed = time.perf_counter() - start
    return result, len(result) / elapsed if elapsed > 0 else float("inf")
