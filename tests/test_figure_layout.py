"""Figure layout: a method has one colour in every figure, and no text of a figure touches another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.transforms import Bbox

import defectcam.stages.sweep as sweep_stage
from defectcam.report.figures import (
    BASELINE_COLOUR,
    METHOD_COLOURS,
    REFERENCE_COLOUR,
    method_colours,
    overlay_strip,
    threshold_curves,
    wrap_text,
)

# localize's entries in its own order: CAMs per layer, fusions, the decoder, baselines, products
LAYERS = ("layer1", "layer2", "layer3", "layer4")
ENTRIES = ([(m, layer) for m in ("gradcam", "gradcampp", "layercam") for layer in LAYERS]
           + [("layercam_fused", "layer1+layer2+layer3+layer4"), ("multiplicative", "layer2+layer3+layer4"),
              ("multiplicative_geometric", "layer2+layer3+layer4"), ("fullres", "layercam/layer2"),
              ("full_image", "-"), ("centred_ellipse", "-"), ("random", "-")]
           + [(f"fullres_x_{m}", layer) for m in ("gradcam", "gradcampp", "layercam") for layer in LAYERS])
THRESHOLDS = (0.0, 0.0005, 0.005, 0.05, 0.2, 0.5, 0.9)
LOCALIZE_TITLE = "problem 1: validation scores against threshold (no gate, no post-process)"


def _curves(entries: list[tuple[str, str]]) -> pd.DataFrame:
    """Curves as localize's curves.csv holds them (validation, no gate, no post-process)."""
    return pd.DataFrame([{"problem": 1, "method": m, "layer": layer, "split": "val", "gate": "none", "postprocess": "none",
                          "threshold": t, "miou": (k % 7) / 10 + t / 4, "all_miou": 0.9 - (k % 5) / 10 - t / 4}
                         for k, (m, layer) in enumerate(entries) for t in THRESHOLDS])


def _line_colours(fig) -> dict[str, tuple[float, ...]]:
    """method -> the RGBA colour of its lines in every panel (asserting a method has one colour within the figure)."""
    colours: dict[str, tuple[float, ...]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            method = line.get_label().split(" ")[0]
            colour = to_rgba(line.get_color())
            assert colours.setdefault(method, colour) == colour, f"{method} has two colours in one figure"
    return colours


def _sweep_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, curves: pd.DataFrame):
    """The figure gather_sweep draws from job files holding the same entries (it sorts them by method)."""
    drawn = []
    # gather_sweep imports save_figure when it draws (matplotlib is not loaded at start-up): patched at its source
    monkeypatch.setattr("defectcam.report.figures.save_figure", lambda fig, path: drawn.append(fig))
    for j, t in enumerate(THRESHOLDS):
        rows = curves[curves["threshold"] == t].rename(columns={"miou": "val_miou", "all_miou": "val_all_miou"})
        rows = rows.assign(test_miou=rows["val_miou"], test_all_miou=rows["val_all_miou"]).drop(columns="split")
        (tmp_path / "jobs" / str(j)).mkdir(parents=True)
        rows.to_csv(tmp_path / "jobs" / str(j) / sweep_stage.JOB_FILE, index=False)
    sweep_stage.gather_sweep(tmp_path / "jobs", tmp_path / "out")
    return drawn[0]


def test_a_method_has_one_colour_in_the_localize_and_the_sweep_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    curves = _curves(ENTRIES)
    localize = _line_colours(threshold_curves(curves, LOCALIZE_TITLE))
    sweep = _line_colours(_sweep_figure(tmp_path, monkeypatch, curves))
    assert set(localize) == set(sweep) == {m for m, _ in ENTRIES}
    assert {m: c for m, c in sweep.items() if c != localize[m]} == {}


def test_a_method_keeps_its_colour_whatever_else_a_figure_draws() -> None:
    every = _line_colours(threshold_curves(_curves(ENTRIES), "all"))
    for subset in (["layercam"], ["fullres", "layercam", "random"], ["multiplicative", "gradcampp"]):
        some = _line_colours(threshold_curves(_curves([e for e in ENTRIES if e[0] in subset]), "some"))
        assert some == {m: every[m] for m in subset}
    assert every["gradcam"] == to_rgba(METHOD_COLOURS["gradcam"])


def test_methods_have_distinct_colours_and_only_baselines_are_grey() -> None:
    unknown = [("layercam_fused_l34", "layer3+layer4"), ("supervised", "masks"), ("mystery", "layer2")]
    colours = _line_colours(threshold_curves(_curves(ENTRIES + unknown), "all"))
    baselines = {"full_image", "centred_ellipse", "random"}
    assert {colours[m] for m in baselines} == {to_rgba(BASELINE_COLOUR)}
    drawn = [c for m, c in colours.items() if m not in baselines]
    assert len(set(drawn)) == len(drawn)
    assert colours["supervised"] == to_rgba(REFERENCE_COLOUR)
    assert not [m for m, (r, g, b, _) in colours.items() if m not in baselines and r == g == b and 0 < r < 1]


def test_every_known_method_has_its_own_colour() -> None:
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    # the product of the decoder with a CAM is a light shade of that CAM's hue, never another method's colour
    assert METHOD_COLOURS["fullres_x_gradcam"] not in {METHOD_COLOURS[m] for m in METHOD_COLOURS if m != "fullres_x_gradcam"}


def test_unknown_methods_are_coloured_by_name_not_by_order() -> None:
    names = ["zeta_fusion", "alpha_fusion", "gradcam"]
    assert method_colours(names) == method_colours(reversed(names))
    many = method_colours(f"m{i:02d}" for i in range(40))
    assert len({many[f"m{i:02d}"] for i in range(18)}) == 18  # past the palette's 18 colours, they cycle
    assert many["m18"] == many["m00"]


def _extent(artist, renderer) -> Bbox:
    return artist.get_window_extent(renderer)


def _apart(a: Bbox, b: Bbox, gap: float = 0.0) -> bool:
    """Whether two boxes are at least `gap` pixels apart, horizontally or vertically."""
    return a.x1 + gap <= b.x0 or b.x1 + gap <= a.x0 or a.y1 + gap <= b.y0 or b.y1 + gap <= a.y0


def _texts(artists) -> list:
    return [a for a in artists if a.get_visible() and a.get_text()]


@pytest.mark.parametrize("title", [LOCALIZE_TITLE, "threshold sweep: validation scores, mean over problems (gate none, "
                                   "post-process none), with a title long enough to need two lines in this figure " * 2])
def test_threshold_curves_texts_do_not_touch(title: str) -> None:
    fig = threshold_curves(_curves(ENTRIES), title)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    suptitle = fig._suptitle
    legend = fig.legends[0] if fig.legends else fig.axes[-1].get_legend()
    for ax in fig.axes:
        label = _extent(ax.yaxis.label, renderer)
        assert label.height > 0
        assert _apart(label, _extent(suptitle, renderer), 2)
        assert not ax.title.get_text() or _apart(label, _extent(ax.title, renderer), 2)
        assert _apart(label, _extent(legend, renderer))
        # the label stays beside its own panel: no taller than it, clear of the other panels and their tick labels
        frame = ax.get_window_extent(renderer)
        assert frame.y0 - 1 <= label.y0 and label.y1 <= frame.y1 + 1
        for other in fig.axes:
            if other is not ax:
                assert _apart(label, other.get_window_extent(renderer))
                for tick in _texts(other.get_xticklabels() + other.get_yticklabels()):
                    assert _apart(label, _extent(tick, renderer))
        assert _apart(_extent(legend, renderer), frame)  # the legend covers no curve
    assert _extent(suptitle, renderer).y0 >= max(ax.get_tightbbox(renderer).y1 for ax in fig.axes) - 0.5
    inside = fig.bbox
    for text in [suptitle, *(ax.yaxis.label for ax in fig.axes), *(ax.xaxis.label for ax in fig.axes)]:
        box = _extent(text, renderer)
        assert inside.x0 - 1 <= box.x0 and box.x1 <= inside.x1 + 1 and inside.y0 - 1 <= box.y0 and box.y1 <= inside.y1 + 1


STRIP_LABELS = ["best: IoU 0.92", "median: IoU 0.72", "worst: IoU 0.39", "defect-free: nothing ungated\nclassifier: defect-free"]
LONG_LABELS = ["best: fullres_x_gradcampp layer2 + ellipse IoU 0.92", "median: fullres_x_gradcampp layer2 + ellipse",
               "worst: fullres_x_gradcampp_with_an_even_longer_name", "defect-free: nothing ungated\nclassifier: defect-free"]
STRIP_TITLE = ("problem 1: the full-resolution map x gradcampp layer2 + ellipse at threshold 0.163 (chosen on validation), "
               "test images; red: prediction, green: ground truth")


@pytest.mark.parametrize("labels", [STRIP_LABELS, LONG_LABELS, STRIP_LABELS[3:]])
@pytest.mark.parametrize("title", [STRIP_TITLE, "problem 1: fullres_x_gradcampp layer2 + ellipse"])
def test_answer_strip_titles_do_not_touch(labels: list[str], title: str) -> None:
    n, size = len(labels), 24
    images = np.full((n, size, size), 128, dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    masks[:, 8:14, 8:14] = True
    fig = overlay_strip(images, masks, masks.astype(float), masks, labels, title)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    suptitle = _extent(fig._suptitle, renderer)
    titles = [_extent(ax.title, renderer) for ax in fig.axes]
    inside = fig.bbox
    for i, (ax, box) in enumerate(zip(fig.axes, titles)):
        assert _apart(box, suptitle, 3), f"panel {i + 1}'s title touches the figure's title"
        assert _apart(box, ax.get_window_extent(renderer))  # above its image, not on it
        assert all(_apart(box, other, 2) for other in titles[i + 1:])
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1
    assert inside.x0 <= suptitle.x0 and suptitle.x1 <= inside.x1 and suptitle.y1 <= inside.y1


def test_wrap_text_fits_the_width_it_is_given() -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(dpi=100)
    for text, width, fontsize in ((STRIP_TITLE, 4.0, 9), (LONG_LABELS[0], 2.15, 8), (LONG_LABELS[2], 1.0, 8),
                                  ("all-mIoU (mean over all images; defect-free = 1 if nothing predicted)", 3.4, "medium")):
        wrapped = wrap_text(text, width, fontsize)
        assert wrapped.replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")
        for line in wrapped.split("\n"):
            drawn = fig.text(0, 0, line, fontsize=fontsize)
            fig.canvas.draw()
            assert drawn.get_window_extent().width <= width * fig.dpi, line
    assert wrap_text("short", 3.0, 10) == "short"
    assert wrap_text("two\nlines", 3.0, 10) == "two\nlines"
    plt.close(fig)
