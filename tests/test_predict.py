"""defectcam-predict on the tiny pipeline: the same masks and decisions as localize for the same entry, new image
formats and sizes, bad files skipped or stopping, outputs never half-written nor silently replaced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import middle_of_widest_gap, private_copy, rewrite_json, run_cli
from defectcam.stages.cams import load_cam_cache
from defectcam.stages.data import prepare_data
from defectcam.stages.predict import run_predict
from defectcam.stages.predict_check import compare_with_localize


def data_root(pipeline) -> Path:
    return Path(next(o for o in pipeline["overrides"] if o.startswith("data.root=")).split("=", 1)[1])


def predict(pipeline, *extra: str):
    overrides = [o for o in pipeline["overrides"] if not o.startswith("data.problems=")]
    return run_cli("predict", *overrides, "data.problems=[1]", *extra)


def test_predict_gives_localize_masks_and_decisions(pipeline, tmp_path: Path, compose_cfg) -> None:
    inputs = data_root(pipeline) / "Class1" / "Test"
    result = predict(pipeline, f"predict.input={inputs}", f"predict.output={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert {"image", "logit_margin", "p_defect", "defect", "mask", "overlay", "method", "layer", "threshold", "gate",
            "postprocess"} <= set(rows.columns)
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())[0]["image"] == rows["image"][0]
    entry = rows.iloc[0]
    # The protocol's choice: the summary's entry chosen on validation by mIoU under the classifier gate.
    summary = pd.read_csv(pipeline["out"] / "tables" / "localization_summary.csv")
    chosen = summary[(summary["problem"] == 1) & (summary["gate"] == "classifier") & (summary["chosen_by"] == "miou")].iloc[0]
    assert (entry["method"], entry["layer"], entry["postprocess"], entry["gate"]) == (chosen["method"], chosen["layer"], chosen["postprocess"], "classifier")
    assert entry["threshold"] == pytest.approx(chosen["threshold"])
    # What localize scored for the same images: the cached test maps of that entry at that threshold, gated.
    folder = pipeline["out"] / "problem_1"
    assert json.loads((folder / "localization_meta.json").read_text())["decision_threshold"] == \
        json.loads((folder / "metrics.json").read_text())["decision_threshold"]  # one source: evaluate
    cfg = compose_cfg(*pipeline["overrides"])
    data = prepare_data(cfg, show_progress=False)[1]
    check = compare_with_localize(cfg, data, folder, tmp_path / "out")
    n_test = int((pd.read_csv(folder / "split.csv")["part"] == "test").sum())
    assert check["n"] == n_test == len(rows) and check["images"]["shape_ok"].all()
    assert check["same_decisions"] == n_test and check["max_margin_difference"] < 1e-3
    # The cache stores maps as float16 codes: a pixel at the threshold may flip, nothing more.
    assert check["min_iou"] >= 0.9 and check["mean_iou"] >= 0.98, check["images"]
    # The tiny classifier may call every test image defect-free (on some CPUs it does), and then every mask above was
    # empty on both sides. With the gate's decision in the widest gap between the test margins, some pass it.
    copy, overrides = private_copy(pipeline, tmp_path, "copy", link=True)
    margins = load_cam_cache(copy / "problem_1")["test"]["logit_margin"]
    rewrite_json(copy / "problem_1" / "localization_meta.json", decision_threshold=middle_of_widest_gap(margins.tolist()))
    run_predict(compose_cfg(*overrides, f"predict.input={inputs}", f"predict.output={tmp_path / 'gated'}"))
    check = compare_with_localize(compose_cfg(*overrides), data, copy / "problem_1", tmp_path / "gated")
    gated = pd.read_csv(tmp_path / "gated" / "predictions.csv")
    passed = gated["defect"] == 1
    assert 0 < passed.sum() < n_test and check["same_decisions"] == n_test
    assert gated.loc[passed, "mask_pixels"].sum() > 0 and (gated.loc[~passed, "mask_pixels"] == 0).all()
    assert check["min_iou"] >= 0.9 and check["mean_iou"] >= 0.98, check["images"]


def test_other_formats_sizes_and_bad_files(pipeline, tmp_path: Path) -> None:
    inputs = tmp_path / "new"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), "RGB").save(inputs / "colour.bmp")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(inputs / "gray.tif")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(inputs / "tiny.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    result = predict(pipeline, f"predict.input={inputs}", f"predict.output={out}", "predict.entry=layercam/layer2",
                     "predict.postprocess=ellipse", "predict.gate=none")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 prediction(s) written" in result.stdout and "2 input(s) skipped" in result.stdout
    said = result.stdout + result.stderr
    assert "broken.png: cannot decode image" in said and "tiny.png: image is 16x16" in said
    assert "colour.bmp: converted RGB -> 8-bit gray" in said
    rows = pd.read_csv(out / "predictions.csv").set_index("image")
    colour = rows.loc[str(inputs / "colour.bmp")]
    assert (colour["method"], colour["layer"], colour["postprocess"], colour["gate"]) == ("layercam", "layer2", "ellipse", "none")
    mask = np.asarray(Image.open(out / colour["mask"]))
    assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 255}  # the image's own size
    assert np.asarray(Image.open(out / colour["overlay"])).shape == (40, 48, 3)
    assert {"ellipse_cx", "ellipse_cy", "ellipse_major", "ellipse_minor", "ellipse_angle_deg"} <= set(rows.columns)
    if mask.any():
        assert 0 <= colour["ellipse_cx"] <= 48 and colour["ellipse_major"] >= colour["ellipse_minor"] > 0

    again = predict(pipeline, f"predict.input={inputs}", f"predict.output={out}")
    assert again.returncode == 2 and "already exists; pass predict.force=true" in again.stderr
    stopped = predict(pipeline, f"predict.input={inputs}", f"predict.output={tmp_path / 'stopped'}", "predict.on_error=stop")
    assert stopped.returncode == 2 and "broken.png: cannot decode image" in stopped.stderr.strip().splitlines()[-1]
    assert "Traceback" not in stopped.stderr
    assert not (tmp_path / "stopped").exists() and not list(tmp_path.glob(".stopped.partial-*"))  # nothing half-written
    forced = predict(pipeline, f"predict.input={inputs / 'gray.tif'}", f"predict.output={out}", "predict.force=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert len(pd.read_csv(out / "predictions.csv")) == 1


def test_an_entry_localize_did_not_score_is_one_line_naming_the_scored_ones(pipeline, tmp_path: Path) -> None:
    result = predict(pipeline, f"predict.input={data_root(pipeline) / 'Class1' / 'Test'}", f"predict.output={tmp_path / 'o'}",
                     "predict.entry=layercam/layer9")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "predict.entry: 'layercam/layer9'" in line and "layercam/layer2" in line
    assert not (tmp_path / "o").exists()


def test_a_fusion_entry_predicts_too(pipeline, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)).save(image)
    result = predict(pipeline, f"predict.input={image}", f"predict.output={tmp_path / 'o'}",
                     "predict.entry=multiplicative/layer2+layer3+layer4")
    assert result.returncode == 0, result.stderr[-2000:]
    row = pd.read_csv(tmp_path / "o" / "predictions.csv").iloc[0]
    assert (row["method"], row["layer"]) == ("multiplicative", "layer2+layer3+layer4")


@pytest.mark.parametrize("method", ["fullres", "layercam"])
def test_a_pixel_a_rounding_step_below_the_threshold_is_flagged_as_localize_flagged_it(method: str) -> None:
    """Localize scores the caches' float16 maps (the decoder's probabilities; a CAM's codes of its own range), so a
    value a quarter float16 step below its threshold is at the threshold there: predict must flag that pixel too."""
    import torch

    from defectcam.localization.entry_network import EntryParts
    from defectcam.stages.predict import Entry, Predictor

    threshold = 0.875  # a float16 value; float16's step in [0.5, 1) is 2 ** -11
    source = torch.zeros(1, 8, 8)
    source[0, 3, 4] = threshold - 2.0**-13
    source[0, 0, 0] = 1.0  # the CAM's peak: its min-max leaves the map as it is
    if method == "fullres":
        parts, entry = EntryParts("fullres", None, ()), Entry("fullres", "layercam/layer2", "none", "none", threshold)
    else:
        parts, entry = EntryParts(None, "layercam", ("layer2",)), Entry("layercam", "layer2", "none", "none", threshold)
    predictor = Predictor(lambda gray: (torch.ones(1), source), parts, entry, 0.0, 8, {})
    ((_, mask, _, defect),) = predictor([np.zeros((8, 8), np.uint8)])
    assert defect and mask[3, 4] and mask[0, 0] and mask.sum() == 2
