"""The weak decoder's map times a CAM's (localize.fullres_products): the gate, its threshold from validation alone,
and the entries localize scores and draws."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from cam_models import calibrated_resnet
from conftest import middle_of_widest_gap, private_copy, run_cli
from defectcam.cams import scoring_maps
from defectcam.cams.storage import as_stored
from defectcam.cams.tta import tta_cams
from defectcam.errors import ConfigError
from defectcam.fullres.maps import defect_probabilities, probability_scoring_maps, stored_probabilities
from defectcam.fullres.network import FullResolutionNet
from defectcam.fullres.shared_pass import product_sources
from defectcam.localization import Part, Protocol, evaluate_entry
from defectcam.localization.products import decoder_gate_threshold, gated_product, product_cam, product_method, weak_decoder_maps
from defectcam.report.figures import threshold_curves
from defectcam.stages import localize as localize_stage
from defectcam.stages.cams import load_cam_cache
from defectcam.stages.data import prepare_data
from defectcam.stages.fullres import load_fullres_cache
from defectcam.stages.localize import (
    entries_for,
    fresh_localize_meta,
    parts_of,
    probability_maps,
    recorded_decoder_threshold,
    run_localize,
)
from defectcam.stages.predict_check import compare_with_localize, localize_maps
from defectcam.stages.settings import validate
from test_fullres_stage import corrupt_masks
from test_predict import data_root

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_product_is_emptied_where_the_decoder_stays_below_its_threshold() -> None:
    generator = torch.Generator().manual_seed(0)
    decoder = torch.rand(3, 8, 8, generator=generator) * 0.4
    decoder[0, 2, 3] = 0.9  # reaches the threshold: kept
    decoder[2, 5, 5] = 0.5  # exactly at it: kept (a pixel >= the threshold is flagged)
    cam = torch.rand(3, 8, 8, generator=generator)
    out = gated_product(decoder, cam, threshold=0.5)
    assert torch.equal(out[0], decoder[0] * cam[0]) and torch.equal(out[2], decoder[2] * cam[2])
    assert float(out[1].abs().max()) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        gated_product(decoder, cam[:, :4], 0.5)


def test_names_map_both_ways() -> None:
    assert product_method("gradcampp") == "fullres_x_gradcampp" and product_cam("fullres_x_gradcampp") == "gradcampp"
    assert product_cam("fullres") is None and product_cam("gradcampp") is None


@pytest.mark.parametrize("select_on", ["miou", "all_miou"])
def test_the_gate_is_the_threshold_the_protocol_chooses_for_the_decoder(select_on: str) -> None:
    """Oracle: the protocol's own val-best ungated row for the decoder's maps."""
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(6, 16, 16, generator=generator)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[:3, 4:10, 5:12] = True
    maps[:3] += 0.5 * masks[:3]  # defects score higher, but not separably
    maps = maps.clamp(0, 1)
    defective = torch.tensor([True, True, True, False, False, False])
    part = Part(maps, masks, defective, defective)
    result = evaluate_entry(part, part, Protocol(gates=("none",), bootstrap=10, select_on=select_on))
    expected = next(r["threshold"] for r in result.rows if r["split"] == "val" and r["selection"] == "val-best")
    assert decoder_gate_threshold(maps, masks, defective, select_on) == pytest.approx(expected, abs=0.0)


def product_rows_mask(rows: pd.DataFrame) -> pd.Series:
    return rows["method"].str.startswith("fullres_x_")


def product_rows(out: Path) -> pd.DataFrame:
    rows = pd.read_csv(out / "problem_1" / "localization.csv")
    return rows[product_rows_mask(rows)]


def test_localize_scores_each_product_gated_at_the_decoders_own_threshold(pipeline, tmp_path: Path, compose_cfg) -> None:
    out, overrides = private_copy(pipeline, tmp_path)
    cfg = compose_cfg(*overrides, "localize.fullres_products=[gradcam,layercam]")
    run_localize(cfg)
    rows = pd.read_csv(out / "problem_1" / "localization.csv")
    products = product_rows(out)
    assert set(products["method"]) == {"fullres_x_gradcam", "fullres_x_layercam"}
    assert set(products["layer"]) == set(rows[rows["method"] == "gradcam"]["layer"])  # every cached layer
    assert set(products["gate"]) == {"none", "classifier"} and set(products["postprocess"]) == {"none", "ellipse"}
    # every product row records the threshold localize applied: the one it chose for the decoder itself
    decoder_row = rows[(rows["method"] == "fullres") & (rows["selection"] == "val-best") & (rows["gate"] == "none")
                       & (rows["postprocess"] == "none") & (rows["split"] == "val")].iloc[0]
    assert set(products["decoder_threshold"]) == {decoder_row["threshold"]}
    assert rows[~product_rows_mask(rows)]["decoder_threshold"].isna().all()
    data = prepare_data(cfg, show_progress=False)[1]
    folder, meta = out / "problem_1", fresh_localize_meta(cfg, data)
    cache = load_cam_cache(folder)
    parts = {part: parts_of(cache, part, data, torch.device("cpu")) for part in ("val", "test")}
    probs = {part: probability_maps(folder, meta, part, truth["rows"], torch.device("cpu")) for part, (_, truth) in parts.items()}
    raw, _ = parts["test"]
    decoder = weak_decoder_maps(probs["test"], data.native_size)
    # the tiny decoder flags every test image at its own gate, so the wiring is probed at a gate that splits them
    # images on both sides of it by construction (nothing is recomputed here, so any gap will do)
    probe = middle_of_widest_gap(decoder.flatten(1).amax(dim=1).tolist(), min_width=0.0)
    kept = decoder.flatten(1).amax(dim=1) >= probe
    seen = 0
    for method, layer, maps in entries_for(cfg, raw, data.native_size, probs["test"], probe):
        if product_cam(method) is None:
            continue
        seen += 1
        cam = scoring_maps(raw[product_cam(method)][layer], data.native_size)
        assert torch.equal(maps[kept], (decoder * cam)[kept]) and float(maps[~kept].abs().sum()) == 0.0
    assert seen == len(set(zip(products["method"], products["layer"])))


def test_only_validation_masks_decide_the_products(pipeline, tmp_path: Path, compose_cfg, monkeypatch) -> None:
    """The decoder threshold is chosen from the validation masks (a spy sees exactly those), and corrupting every test
    mask changes the products' test scores, never a validation row or the recorded threshold."""
    seen: list[torch.Tensor] = []

    def spy(maps: torch.Tensor, masks: torch.Tensor, defective: torch.Tensor, select_on: str) -> float:
        seen.append(masks.clone())
        return decoder_gate_threshold(maps, masks, defective, select_on)

    monkeypatch.setattr(localize_stage, "decoder_gate_threshold", spy)
    found = []
    for name, corrupted in (("clean", False), ("corrupted", True)):
        out, overrides = private_copy(pipeline, tmp_path, name)
        if corrupted:
            corrupt_masks(out, ("test",))
        cfg = compose_cfg(*overrides, "localize.fullres_products=[gradcam]", "localize.postprocess=[none]")
        run_localize(cfg)
        found.append(product_rows(out).reset_index(drop=True))
        data = prepare_data(cfg, show_progress=False)[1]
        _, val_truth = parts_of(load_cam_cache(out / "problem_1"), "val", data, torch.device("cpu"))
        assert torch.equal(seen[-1], val_truth["masks"].cpu())
    assert len(seen) == 2
    clean, corrupted = found
    val = lambda frame: frame[frame["split"] == "val"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(val(clean), val(corrupted))
    assert clean["decoder_threshold"].equals(corrupted["decoder_threshold"])
    assert not clean[clean["split"] == "test"]["miou"].equals(corrupted[corrupted["split"] == "test"]["miou"])


def test_a_product_chosen_alone_is_the_answer_strip(pipeline, tmp_path: Path, compose_cfg) -> None:
    out, overrides = private_copy(pipeline, tmp_path)
    strip = out / "problem_1" / "figures" / "answer_strip.png"
    strip.unlink(missing_ok=True)
    run_localize(compose_cfg(*overrides, "localize.fullres_products=[gradcam]", "localize.methods=[fullres_x_gradcam]",
                             "localize.postprocess=[none]"))
    rows = pd.read_csv(out / "problem_1" / "localization.csv")
    assert set(rows["method"]) == {"fullres_x_gradcam"} and strip.is_file()
    # predict reads the threshold the product rows record (here there is no fullres row at all); a table from before
    # that column is refused in one line, exit 2, nothing written
    image = next((data_root(pipeline) / "Class1" / "Test").glob("*.PNG"))
    args = [*overrides, "predict.entry=fullres_x_gradcam/layer2", "predict.postprocess=none", f"predict.input={image}"]
    done = run_cli("predict", *args, f"predict.output={tmp_path / 'predicted'}")
    assert done.returncode == 0, done.stderr[-2000:]
    rows.drop(columns="decoder_threshold").to_csv(out / "problem_1" / "localization.csv", index=False)
    refused = run_cli("predict", *args, f"predict.output={tmp_path / 'refused'}")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "decoder_threshold" in lines[0], refused.stderr[-2000:]
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("localize.fullres_products=[nope]", "localize.fullres_products: 'nope' is not one of"),
    ("localize.fullres_products=gradcam", "must be a list of names"),
    ("localize.methods=[fullres_x_nope]", "localize.methods: 'fullres_x_nope' is not one of"),
])
def test_bad_product_settings_are_one_line(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as error:
        validate(compose_cfg(override))
    assert "\n" not in str(error.value)


def test_products_named_without_a_weak_decoder_are_one_line(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="add cams to it") as error:
        validate(compose_cfg("localize.fullres_products=[gradcam]", "fullres.supervision=[masks]"))
    assert "\n" not in str(error.value)
    validate(compose_cfg("localize.fullres_products=null", "fullres.supervision=[]"))  # null: whenever there is one


def test_threshold_curves_draw_more_methods_than_ten_colours() -> None:
    """CAMs, fusions, decoders and their products reach 15 methods; each gets a colour (tab10 ran out at 10)."""
    methods = [f"m{i}" for i in range(15)] + ["fullres_x_m0"]
    curves = pd.DataFrame([{"method": m, "layer": "layer2", "threshold": t, "miou": t, "all_miou": t}
                           for m in methods for t in (0.1, 0.5, 0.9)])
    figure = threshold_curves(curves, "many methods")
    lines = figure.axes[0].get_lines()
    assert len(lines) == len(methods) and len({tuple(line.get_color()) for line in lines}) == len(methods)


def test_product_names_are_known_to_localize_methods(compose_cfg) -> None:
    validate(compose_cfg("localize.fullres_products=null", "localize.methods=[fullres_x_layercam]"))


def test_predict_applies_a_product_entry_as_localize_builds_it(pipeline, tmp_path: Path, compose_cfg) -> None:
    out, overrides = private_copy(pipeline, tmp_path)
    products = "localize.fullres_products=[gradcam]"
    run_localize(compose_cfg(*overrides, products, "localize.postprocess=[none]"))
    # The tiny decoder passes its own threshold on every test image, which would leave the gate untested: move the
    # threshold the product rows record into the widest gap between the decoder's test maxima (no image near it).
    # Predict and the check then both apply that recorded value, so this shows they agree on it image by image.
    table_path = out / "problem_1" / "localization.csv"
    table = pd.read_csv(table_path)
    maxima = load_fullres_cache(out / "problem_1")["test"]["maps"]["fullres"]["layercam/layer2"].float().flatten(1).amax(dim=1)
    at = table["method"] == "fullres_x_gradcam"
    # float16 codes, at most 2**-11 apart below 1: a gap over two steps keeps predict's float32 values on their side
    gate = middle_of_widest_gap(maxima.tolist(), min_width=1e-3)
    table.loc[at, "decoder_threshold"] = gate
    table.to_csv(table_path, index=False)
    assert recorded_decoder_threshold(table, "fullres_x_gradcam", "layer2") == gate
    # An emptied map is all zeros, so it stays empty only above a threshold of 0, which validation may choose for a
    # tiny decoder: the entry's threshold becomes half the smallest peak of the maps the gate keeps.
    cfg = compose_cfg(*overrides, products, "localize.postprocess=[none]")
    data = prepare_data(cfg, show_progress=False)[1]
    peaks = localize_maps(cfg, data, out / "problem_1", "test", "fullres_x_gradcam", "layer2").flatten(1).amax(dim=1)
    assert (peaks == 0).any() and (peaks > 0).any()
    entry = at & (table["layer"] == "layer2") & (table["selection"] == "val-best") & (table["gate"] == "none")
    table.loc[entry, "threshold"] = float(peaks[peaks > 0].min()) / 2
    table.to_csv(table_path, index=False)
    inputs = data_root(pipeline) / "Class1" / "Test"
    result = run_cli("predict", *overrides, products, "localize.postprocess=[none]", "predict.entry=fullres_x_gradcam/layer2",
                     "predict.gate=none", f"predict.input={inputs}", f"predict.output={tmp_path / 'predicted'}")
    assert result.returncode == 0, result.stderr[-2000:]
    check = compare_with_localize(cfg, data, out / "problem_1", tmp_path / "predicted")
    assert check["entry"].startswith("fullres_x_gradcam/layer2")
    assert check["n"] > 0 and check["images"]["shape_ok"].all() and check["same_decisions"] == check["n"]
    # The cache stores CAMs as float16 codes: a pixel at the threshold may flip, nothing more.
    assert check["min_iou"] >= 0.9 and check["mean_iou"] >= 0.98, check["images"]
    emptied = pd.read_csv(tmp_path / "predicted" / "predictions.csv")["mask_pixels"] == 0
    assert emptied.any() and not emptied.all()


def test_a_threshold_sweep_scores_the_products_as_the_protocol_does(pipeline, tmp_path: Path, compose_cfg) -> None:
    """The sweep (localize.threshold) gates its products with the decoder's validation threshold too: at 0.5, one of
    the protocol's fixed thresholds, both give the same scores for every product, on both splits."""
    out, overrides = private_copy(pipeline, tmp_path)
    settings = [*overrides, "localize.fullres_products=[gradcam]", "localize.postprocess=[none]"]
    run_localize(compose_cfg(*settings))
    fixed = product_rows(out)
    fixed = fixed[(fixed["selection"] == "fixed") & (fixed["threshold"] == 0.5)]
    run_localize(compose_cfg(*settings, "localize.threshold=0.5"), tmp_path / "job")
    swept = pd.read_csv(tmp_path / "job" / "localization_job.csv")
    swept = swept[swept["method"].str.startswith("fullres_x_")]
    assert len(swept) == len(fixed) / 2 > 0  # one sweep row per entry and gate; the protocol: a test and a val row
    for _, row in swept.iterrows():
        for split in ("val", "test"):
            match = fixed[(fixed["layer"] == row["layer"]) & (fixed["gate"] == row["gate"]) & (fixed["split"] == split)]
            assert row[f"{split}_miou"] == pytest.approx(float(match["miou"].iloc[0]), abs=1e-9)
            assert row[f"{split}_image_false_alarm"] == pytest.approx(float(match["image_false_alarm"].iloc[0]), abs=1e-9)


@pytest.mark.parametrize(("tta", "target", "image_channels", "deepest"),
                         [("none", 1, 0, "layer4"), ("flips", 1, 0, "layer4"), ("flips", "predicted", 4, "layer4"),
                          ("flips", 1, 0, "layer2")])
def test_one_classifier_pass_gives_the_maps_of_two(tta: str, target: int | str, image_channels: int, deepest: str) -> None:
    """predict's product: the CAM's own forward pass feeds the decoder, and both maps are those of a pass each."""
    network = FullResolutionNet(calibrated_resnet("resnet18", size=64), (8, 8, 8), image_channels,
                                deepest_layer=deepest).eval()
    images = torch.randn(3, 3, 64, 64)
    passes = []
    handle = network.classifier.layer1.register_forward_hook(lambda *_: passes.append(1))
    logits, cam, probs = product_sources(network, images, "gradcampp", "layer2", target, tta)
    shared = len(passes)
    apart = tta_cams(network.classifier, images, ["layer2"], ["gradcampp"], target, tta)
    with torch.no_grad():
        apart_logits, apart_probs = defect_probabilities(network, images, tta)
    handle.remove()
    assert shared == {"none": 1, "flips": 4}[tta] and len(passes) == 3 * shared  # one classifier pass per transform, not two
    assert cam.abs().amax() > 0 and 0 < probs.mean() < 1
    torch.testing.assert_close(cam, apart.maps["gradcampp"]["layer2"], rtol=0, atol=0)
    torch.testing.assert_close(probs, apart_probs, rtol=0, atol=0)
    torch.testing.assert_close(logits, apart_logits, rtol=0, atol=0)
    assert not network.classifier.relu._forward_hooks and not network.classifier.layer2._forward_hooks  # hooks removed


@pytest.mark.parametrize(("cam_tta", "decoder_tta"), [("flips", "flips"), ("none", "flips")])
def test_predict_multiplies_the_maps_localize_would(cam_tta: str, decoder_tta: str) -> None:
    """A product in predict, from one shared pass (same TTA) or a pass each (the CAM cache's TTA differs from the
    decoder's): the decoder's map times the CAM's, emptied where the decoder stays below its threshold."""
    from defectcam.localization.entry_network import EntryNetwork, entry_parts
    from defectcam.stages.predict import Entry, Predictor

    network = FullResolutionNet(calibrated_resnet("resnet18", size=64), (8, 8, 8)).eval()
    gray = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    images = ((gray - 0.5) / 0.25).expand(-1, 3, -1, -1)
    with torch.no_grad():
        logits, probs = defect_probabilities(network, images, decoder_tta)
    raw = tta_cams(network.classifier, images, ["layer2"], ["gradcampp"], 1, cam_tta).maps["gradcampp"]["layer2"]
    threshold = float(probs[0].amax() + probs[1].amax()) / 2  # one image above it, one below
    entry = Entry("fullres_x_gradcampp", "layer2", "none", "none", 0.1, threshold)
    parts = entry_parts(entry.method, entry.layer, {})
    entry_net = EntryNetwork(network.classifier, (0.5, 0.25), parts, 1, cam_tta, network, decoder_tta)
    assert entry_net.shares_pass() == (cam_tta == decoder_tta)
    margins, scoring = Predictor(entry_net, parts, entry, 0.0, 64, {}).maps(gray)
    torch.testing.assert_close(margins, logits[:, 1] - logits[:, 0], rtol=0, atol=0)
    size = (96, 96)
    for j in range(2):
        decoder_map = probability_scoring_maps(stored_probabilities(probs[j : j + 1]).float(), size)  # as the caches keep them
        expected = gated_product(decoder_map, scoring_maps(as_stored(raw[j : j + 1]), size), threshold)
        torch.testing.assert_close(scoring[j](size), expected, rtol=0, atol=0)
    assert sum(bool(scoring[j](size).amax() > 0) for j in range(2)) == 1
