"""The report inlines each figure in the smaller of two faithful forms and links the PNG itself."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from defectcam.report.html import JPEG_WHEN_AT_MOST, image_tag, inline_image


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def texture() -> np.ndarray:
    """A photograph-like RGBA figure: smooth noise, as a CAM grid's texture and heat map are."""
    rng = np.random.default_rng(0)
    field = rng.normal(size=(60, 80)).cumsum(0).cumsum(1)
    smooth = np.kron((field - field.min()) / np.ptp(field) * 200, np.ones((4, 4)))
    gray = (smooth + rng.normal(0, 4, smooth.shape)).clip(0, 255).astype(np.uint8)  # the grain of a texture
    rgba = np.stack([gray, 255 - gray, gray // 2, np.full_like(gray, 255)], axis=-1)
    return rgba


def drawing() -> np.ndarray:
    """A line drawing: white, with a few one-pixel lines (threshold curves)."""
    rgba = np.full((240, 320, 4), 255, np.uint8)
    rgba[::40, :, :3] = 0
    rgba[:, ::64, :3] = (30, 90, 200)
    return rgba


def test_a_texture_is_inlined_as_a_faithful_jpeg_of_at_most_half_the_png() -> None:
    png = png_bytes(texture())
    mime, payload = inline_image(png)
    assert mime == "image/jpeg"
    assert len(payload) <= JPEG_WHEN_AT_MOST * len(png)
    decoded = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"), dtype=float)
    assert decoded.shape == (240, 320, 3)
    psnr = 10 * np.log10(255**2 / np.mean((decoded - texture()[..., :3]) ** 2))
    assert psnr > 30  # the project's CAM grids and strips measured 34-37 dB


def test_a_line_drawing_keeps_its_png() -> None:
    png = png_bytes(drawing())
    assert inline_image(png) == ("image/png", png)


def test_transparent_pixels_become_white_not_black() -> None:
    rgba = texture()
    rgba[:, :, 3] = 0  # fully transparent: what shows on a white page is white
    mime, payload = inline_image(png_bytes(rgba))
    decoded = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
    assert decoded.min() > 240, mime


def test_the_tag_inlines_the_figure_and_links_the_png_relative_to_the_page(tmp_path: Path) -> None:
    figure = tmp_path / "problem_1" / "figures" / "cams_layercam.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(png_bytes(texture()))
    tag = image_tag(figure, "problem 1: layercam", page_dir=tmp_path)
    (mime, data), = re.findall(r'src="data:(image/\w+);base64,([^"]+)"', tag)
    assert (mime, base64.b64decode(data)) == inline_image(figure.read_bytes())
    assert '<a href="problem_1/figures/cams_layercam.png">' in tag
    assert "not produced" in image_tag(tmp_path / "absent.png", "absent", page_dir=tmp_path)


def test_the_link_survives_a_folder_name_a_url_would_cut(tmp_path: Path) -> None:
    figure = tmp_path / "run #1?" / "figures" / "fullres.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(png_bytes(drawing()))
    assert '<a href="run%20%231%3F/figures/fullres.png">' in image_tag(figure, "fullres", page_dir=tmp_path)


def test_a_score_null_in_every_metrics_json_shows_as_a_dash(tmp_path: Path) -> None:
    # One problem whose test part lacks a class: its AUC-ROC is null in metrics.json (strict JSON), and a column of
    # nothing but nulls must stay numeric, or the page prints None.
    import json

    from defectcam.report.build import CLASSIFICATION_COLUMNS, classification_table
    from defectcam.report.html import table_html

    folder = tmp_path / "problem_1"
    folder.mkdir()
    metrics = {column: 1 for column in CLASSIFICATION_COLUMNS} | {"accuracy": 0.9, "auc_roc": None, "average_precision": None}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    table = classification_table({1: folder})
    assert table["auc_roc"].dtype.kind == "f" and table["auc_roc"].isna().all()
    html = table_html(table, ["accuracy", "auc_roc"])
    assert "None" not in html and "<td>-</td>" in html and "<td>90.00</td>" in html
