"""Figures: CAM grids (input | ground truth | one overlay per layer) and threshold curves, as PNG.

A method has one colour in every figure (METHOD_COLOURS, from the project's known methods); titles and long axis
labels are wrapped to the space they have and laid out by constrained layout, so no two texts touch."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.textpath import TextToPath  # noqa: E402

from defectcam.cams.methods import METHODS  # noqa: E402
from defectcam.fullres import DECODER_METHODS, REFERENCE_METHODS  # noqa: E402
from defectcam.io import atomic_path  # noqa: E402
from defectcam.localization.baselines import BASELINES  # noqa: E402
from defectcam.localization.products import product_method  # noqa: E402


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


TITLE_GAP = 0.08  # inches of space (constrained layout's h_pad) between a figure's title and its panels' titles


def overlay_strip(images: np.ndarray, truths: np.ndarray, maps: np.ndarray, predicted: np.ndarray, labels: list[str],
                  title: str) -> plt.Figure:
    """One panel per image: the input, a jet heat map of its [0,1] map, the predicted mask's outline (red) and the
    ground truth's (lime). images (n, h, w) uint8; truths, maps, predicted (n, H, W), drawn over the same extent.
    Panel labels and the title are wrapped to the width they have; the figure grows by the lines they take."""
    n = len(images)
    height, width = truths.shape[1:]
    extent = (0, width, height, 0)
    panel = 2.3  # inches per panel
    labels = [wrap_text(label, panel - 0.15, 8) for label in labels]
    title = wrap_text(title, panel * n - 0.2, 9)
    label_lines = max((label.count("\n") + 1 for label in labels), default=1)
    figure_height = panel + 0.2 + 2 * TITLE_GAP + _line_height(9) * (title.count("\n") + 1) + _line_height(8) * label_lines
    fig, axes = plt.subplots(1, n, figsize=(panel * n, figure_height), squeeze=False, layout="constrained")
    fig.get_layout_engine().set(h_pad=TITLE_GAP)
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
    return fig


def _pixel_centres(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, values) for contour: pixel centres at +0.5, matching imshow's extent."""
    height, width = mask.shape
    return np.arange(width) + 0.5, np.arange(height) + 0.5, mask.astype(float)


LINEAR_BELOW = 1e-3  # the threshold axis is linear below this, logarithmic above


def threshold_curves(curves: pd.DataFrame, title: str, x: str = "threshold", scores: tuple[str, ...] = ("miou", "all_miou")) -> plt.Figure:
    """Scores against threshold, one panel per score: a colour per method (method_colours: the same in every
    figure), a line style per layer (baselines grey), one legend right of the panels. The threshold axis is
    logarithmic above 1e-3, so optima at 0.005 are as visible as optima at 0.5."""
    scores = tuple(s for s in scores if s in curves.columns)
    size = (6.2 * len(scores) + 2, 4.8)
    fig, axes = plt.subplots(1, len(scores), figsize=size, squeeze=False, layout="constrained")
    methods = list(dict.fromkeys(curves["method"]))
    baselines = [m for m in methods if _is_baseline(curves, m)]
    colours = method_colours(m for m in methods if m not in baselines)
    # One style per single layer (layer1..layer4, layer3.4, ...); the other entries (fusions, decoders, baselines)
    # have a style of their own, stable as their colour is.
    layers = sorted(layer for layer in set(curves["layer"]) if layer != "-" and "+" not in layer)
    known_baselines = list(BASELINES)
    baseline_order = known_baselines + sorted(set(baselines) - set(known_baselines))
    own_layers = {m: sorted(set(curves.loc[curves["method"] == m, "layer"]) - set(layers)) for m in methods}
    styles = ["-", "--", ":", "-."]

    def style(method: str, layer: str) -> str:
        if method in baselines:
            return styles[baseline_order.index(method) % 4]
        if layer in layers:
            return styles[layers.index(layer) % 4]
        return styles[(_palette_slot(colours[method]) + own_layers[method].index(layer)) % 4]

    title = wrap_text(title, 0.9 * size[0], 10)
    # a y label wraps to the height of its panel: the figure's less its title, the x axis's ticks and label and pads
    label_width = max(size[1] - 1.0 - _line_height(10) * (title.count("\n") + 1), 1.5)
    for ax, y in zip(axes[0], scores):
        for (method, layer), group in curves.groupby(["method", "layer"], sort=False):
            group = group.sort_values(x)
            baseline = method in baselines
            ax.plot(group[x], group[y], label=method if baseline else f"{method} {layer}",
                    color=BASELINE_COLOUR if baseline else colours[method], linestyle=style(method, layer),
                    marker="." if len(group) < 20 else None, linewidth=1.0 if baseline else 1.4)
        ax.set_xscale("symlog", linthresh=LINEAR_BELOW, linscale=0.3)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{x} (log scale above {LINEAR_BELOW:g})")
        ax.set_ylabel(wrap_text(_SCORE_LABELS.get(y, y), label_width, plt.rcParams["axes.labelsize"]))
        ax.grid(alpha=0.3, which="both")
    handles, names = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=6, ncol=2, loc="outside right center")
    fig.suptitle(title, fontsize=10)
    return fig


# Colours. tab20 without its grey pair (grey is the baselines'): 9 strong colours, then their 9 light partners.
_TAB20 = plt.get_cmap("tab20").colors
_GREY_PAIR = 7
STRONG = tuple(_TAB20[2 * i] for i in range(10) if i != _GREY_PAIR)
LIGHT = tuple(_TAB20[2 * i + 1] for i in range(10) if i != _GREY_PAIR)
PALETTE = STRONG + LIGHT
BASELINE_COLOUR = "0.55"
REFERENCE_COLOUR = "black"  # the decoder trained on true masks: a reference, not a result
# cam.fusions' names in conf/cam/default.yaml (a multiplicative fusion also yields <name>_geometric)
FUSION_METHODS = ("layercam_fused", "multiplicative", "multiplicative_geometric")


def _known_colours() -> dict[str, tuple[float, float, float] | str]:
    """Every known method's colour: a CAM method the strong colour of its position in METHODS, its product with the
    decoder (fullres_x_<cam>) the light shade of the same hue, then the fusions and the weak decoder the next free
    colours, the reference decoder black."""
    colours: dict[str, tuple[float, float, float] | str] = {m: REFERENCE_COLOUR for m in REFERENCE_METHODS}
    paired = METHODS[: len(STRONG)]
    for i, method in enumerate(paired):
        colours[method], colours[product_method(method)] = STRONG[i], LIGHT[i]
    rest = [*FUSION_METHODS, *(m for m in DECODER_METHODS.values() if m not in colours), *METHODS[len(paired):],
            *(product_method(m) for m in METHODS[len(paired):])]
    free = [c for c in PALETTE if c not in colours.values()]
    for i, method in enumerate(m for m in rest if m not in colours):
        colours[method] = free[i] if i < len(free) else PALETTE[i % len(PALETTE)]
    return colours


METHOD_COLOURS: Mapping[str, tuple[float, float, float] | str] = MappingProxyType(_known_colours())


def method_colours(methods: Iterable[str]) -> dict[str, tuple[float, float, float] | str]:
    """method -> colour for the methods one figure draws. A known method (METHOD_COLOURS) has its colour in every
    figure; any other (a renamed fusion, say), in name order, takes the colours no known method has, then those of
    the known methods absent here, then those again (past 18): so figures drawing the same methods agree."""
    methods = list(dict.fromkeys(methods))
    colours = {m: METHOD_COLOURS[m] for m in methods if m in METHOD_COLOURS}
    known, drawn = set(METHOD_COLOURS.values()), set(colours.values())
    spare = [c for c in PALETTE if c not in known] + [c for c in PALETTE if c in known and c not in drawn]
    for i, method in enumerate(sorted(m for m in methods if m not in colours)):
        colours[method] = spare[i % len(spare)] if spare else PALETTE[i % len(PALETTE)]
    return colours


def _palette_slot(colour: tuple[float, float, float] | str) -> int:
    return PALETTE.index(colour) if colour in PALETTE else 0


def wrap_text(text: str, width: float, fontsize: float | str) -> str:
    """`text` with line breaks so that no line is wider than `width` inches at `fontsize` (points or a name such as
    'medium'), measured with matplotlib's default font. Greedy; breaks at spaces, inside a too long word after '_'
    or '/'; its own line breaks are kept."""
    return "\n".join(line for paragraph in text.split("\n") for line in _wrap_paragraph(paragraph, width, fontsize))


def _wrap_paragraph(paragraph: str, width: float, fontsize: float | str) -> list[str]:
    """Greedy line breaking of one paragraph (no line breaks in it) at `width` inches."""
    lines, line = [], ""
    for word in paragraph.split(" "):
        pieces = [word] if _text_width(word, fontsize) <= width else re.findall(r"[^_/]+[_/]?|[_/]", word)
        for k, piece in enumerate(pieces):
            glue = " " if k == 0 and line else ""
            if line and _text_width(line + glue + piece, fontsize) > width:
                lines.append(line)
                line = piece
            else:
                line += glue + piece
    return [*lines, line]


def _text_width(text: str, fontsize: float | str) -> float:
    """The width in inches of one line of text at `fontsize`."""
    prop = FontProperties(size=fontsize)
    width, _, _ = _TEXT_PATHS.get_text_width_height_descent(text, prop, ismath=False)
    return 1.06 * width / 72.0  # the renderer's hinted text measured up to 4 % wider than its path


def _line_height(fontsize: float) -> float:
    """Inches one line of text takes (matplotlib's default line spacing, 1.2)."""
    return 1.2 * fontsize / 72.0


_TEXT_PATHS = TextToPath()


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
