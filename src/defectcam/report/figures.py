"""Figures: CAM grids (input | ground truth | one overlay per layer) and threshold curves, as PNG."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from defectcam.io import atomic_path  # noqa: E402


def cam_grid(
    images: np.ndarray,
    masks: np.ndarray,
    layer_maps: Mapping[str, np.ndarray],
    title: str,
    row_labels: list[str] | None = None,
) -> plt.Figure:
    """One row per image: input | ground truth | a jet overlay of each layer's [0,1] map.

    images (n, h, w) uint8; masks (n, H, W) and maps (n, H, W) may be larger (native mask size):
    every panel is drawn over the same extent, so they overlay wherever their resolutions differ.
    """
    n, columns = len(images), 2 + len(layer_maps)
    height, width = masks.shape[1:]
    extent = (0, width, height, 0)
    fig, axes = plt.subplots(n, columns, figsize=(1.9 * columns, 1.9 * n + 0.4), squeeze=False)
    headers = ["input", "ground truth", *layer_maps]
    for i in range(n):
        panels = [(images[i], None), (images[i], masks[i])] + [(images[i], m[i]) for m in layer_maps.values()]
        for j, (image, overlay) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent)
            if j == 1:
                ax.contour(*_pixel_centres(overlay), levels=[0.5], colors="lime", linewidths=1.0)
            elif overlay is not None:
                ax.imshow(overlay, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, extent=extent)
                ax.contour(*_pixel_centres(masks[i]), levels=[0.5], colors="white", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(headers[j], fontsize=9)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def overlay_strip(images: np.ndarray, truths: np.ndarray, maps: np.ndarray, predicted: np.ndarray, labels: list[str],
                  title: str) -> plt.Figure:
    """One panel per image: the input, a jet heat map of its [0,1] map, the predicted mask's outline (red) and the
    ground truth's (lime). images (n, h, w) uint8; truths, maps, predicted (n, H, W), drawn over the same extent."""
    n = len(images)
    height, width = truths.shape[1:]
    extent = (0, width, height, 0)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.7), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, extent=extent)
        ax.imshow(maps[i], cmap="jet", alpha=0.35, vmin=0.0, vmax=1.0, extent=extent)
        for mask, colour in ((truths[i], "lime"), (predicted[i], "red")):
            if mask.any():
                ax.contour(*_pixel_centres(mask), levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(labels[i], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _pixel_centres(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, values) for contour: pixel centres at +0.5, matching imshow's extent."""
    height, width = mask.shape
    return np.arange(width) + 0.5, np.arange(height) + 0.5, mask.astype(float)


LINEAR_BELOW = 1e-3  # the threshold axis is linear below this, logarithmic above


def threshold_curves(curves: pd.DataFrame, title: str, x: str = "threshold", scores: tuple[str, ...] = ("miou", "all_miou")) -> plt.Figure:
    """Scores against threshold, one panel per score: a colour per method, a line style per layer
    (baselines grey). The threshold axis is logarithmic above 1e-3, so optima at 0.005 are as
    visible as optima at 0.5."""
    scores = tuple(s for s in scores if s in curves.columns)
    fig, axes = plt.subplots(1, len(scores), figsize=(6.2 * len(scores) + 2, 4.8), squeeze=False)
    methods = list(dict.fromkeys(curves["method"]))
    # One style per single layer (layer1..layer4, layer3.4, ...); fused maps have a colour of their own.
    layers = sorted(layer for layer in set(curves["layer"]) if layer != "-" and "+" not in layer)
    coloured = [m for m in methods if not _is_baseline(curves, m)]
    # tab10 as ever up to 10 methods; more (CAMs, fusions, decoders and their products) get tab20, cycled past 20
    palette = plt.get_cmap("tab10" if len(coloured) <= 10 else "tab20").colors
    colours = dict(zip(coloured, itertools.cycle(palette)))
    styles = ["-", "--", ":", "-."]
    for ax, y in zip(axes[0], scores):
        for (method, layer), group in curves.groupby(["method", "layer"], sort=False):
            group = group.sort_values(x)
            baseline = _is_baseline(curves, method)
            ax.plot(group[x], group[y], label=method if baseline else f"{method} {layer}",
                    color="0.55" if baseline else colours[method],
                    linestyle=styles[methods.index(method) % 4] if baseline or layer not in layers else styles[layers.index(layer) % 4],
                    marker="." if len(group) < 20 else None, linewidth=1.0 if baseline else 1.4)
        ax.set_xscale("symlog", linthresh=LINEAR_BELOW, linscale=0.3)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{x} (log scale above {LINEAR_BELOW:g})")
        ax.set_ylabel(_SCORE_LABELS.get(y, y))
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


_SCORE_LABELS = {
    "miou": "mIoU (defect IoU, mean over defective images)",
    "all_miou": "all-mIoU (mean over all images; defect-free = 1 if nothing predicted)",
}


def _is_baseline(curves: pd.DataFrame, method: str) -> bool:
    """Baselines carry the layer '-'."""
    return bool((curves.loc[curves["method"] == method, "layer"] == "-").all())


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> None:
    """Write a figure as PNG atomically and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def figure_array(fig: plt.Figure) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array (for TensorBoard)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def overlay_rgb(image: np.ndarray, heat: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """(H, W, 3) uint8: a gray image with a jet heat map of a [0,1] map blended in and the mask's outline in white.
    image, heat and mask share one (H, W) size; drawn without a figure, so it costs milliseconds per image."""
    gray = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)
    colours = matplotlib.colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3]
    rgb = (1 - alpha) * gray + alpha * colours
    # White, not red: jet is red exactly where a mask is. One pixel wide per 256 pixels of the shorter side, so the
    # outline stays visible when a 512 px overlay is shown at half size.
    inner = mask.copy()
    for _ in range(max(1, round(min(mask.shape) / 256))):
        eroded = inner.copy()
        eroded[1:, :] &= inner[:-1, :]
        eroded[:-1, :] &= inner[1:, :]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        inner = eroded
    rgb[mask & ~inner] = (1.0, 1.0, 1.0)  # the mask minus its 4-neighbour erosion
    return (rgb * 255).round().astype(np.uint8)
