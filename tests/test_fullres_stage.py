"""The fullres stage on the tiny pipeline: the classifier stays bit-equal, only validation masks choose, stale caches
are named, bad settings are one line, and the decoder's maps enter localize as entries of their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import private_copy, run_cli, run_script
from defectcam.errors import ConfigError, StaleInputError
from defectcam.fullres.maps import defect_map, defect_probabilities
from defectcam.fullres.network import FullResolutionNet, resnet_features
from defectcam.stages.common import inference_device, trained_problem
from defectcam.stages.data import prepare_data
from defectcam.stages.fullres import (
    decoder_score_name,
    fullres_problem,
    load_fullres_cache,
    masks_at,
    part_rows,
    recipe_of,
    train_decoder,
    train_decoders,
    train_set,
    validation_score,
)
from defectcam.stages.settings import validate


def test_the_pipeline_scores_the_decoder_as_entries_of_its_own(pipeline) -> None:
    folder = pipeline["out"] / "problem_1"
    rows = pd.read_csv(folder / "localization.csv")
    fullres = rows[rows["method"] == "fullres"]
    assert set(fullres["layer"]) == {"layercam/layer2"}  # the layer column names the starting CAM
    assert set(fullres["gate"]) == {"none", "classifier"} and set(fullres["postprocess"]) == {"none", "ellipse"}
    cache = load_fullres_cache(folder)
    probs = cache["test"]["maps"]["fullres"]["layercam/layer2"]
    assert probs.shape[-2:] == (32, 32) and 0.0 <= float(probs.min()) and float(probs.max()) <= 1.0
    assert (folder / "figures" / "fullres.png").is_file() and (folder / "fullres" / "decoder_fullres.pt").is_file()
    assert "fullres" in (pipeline["out"] / "report.html").read_text()


def train_one_decoder(pipeline, tmp_path: Path, compose_cfg, supervision: str, *overrides: str):
    """Train one decoder of problem 1 on the tiny pipeline: (the classifier, its weights before training, the training)."""
    cfg = compose_cfg(*pipeline["overrides"], "fullres.eval_every=1", *overrides)
    data = prepare_data(cfg, show_progress=False)[1]
    device = inference_device(cfg)
    module, _ = trained_problem(cfg, data, device)
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    normalization = tuple(float(v) for v in module.hparams.normalization)
    start = "layercam/layer2" if supervision == "cams" else None
    dataset = train_set(cfg, data, module.net, normalization, supervision, start, device)
    training = train_decoder(cfg, tmp_path, module.net, normalization, recipe_of(cfg, supervision), dataset,
                             validation_score(data, str(cfg.localize.select_on), decoder_score_name(cfg)), f"{supervision}_test")
    return module.net, before, training


def test_the_classifier_is_bit_equal_after_decoder_training(pipeline, tmp_path: Path, compose_cfg) -> None:
    net, before, training = train_one_decoder(pipeline, tmp_path, compose_cfg, "cams", "fullres.steps=3")
    assert training.best_state is not None and len(training.history) == 3
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]
    assert not any(p.requires_grad for p in net.parameters())
    trained = FullResolutionNet(net)
    trained.load_state_dict(training.best_state, strict=False)
    assert any(not torch.equal(v, FullResolutionNet(net).state_dict()[k]) for k, v in training.best_state.items())


def test_tensorboard_files_each_validation_score_at_the_step_it_scored(pipeline, tmp_path: Path, compose_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, training = train_one_decoder(pipeline, tmp_path, compose_cfg, "cams", "fullres.steps=5", "fullres.eval_every=2")
    assert [h["step"] for h in training.history] == [2, 4, 5]
    events = EventAccumulator(str(tmp_path / "tensorboard" / "cams_test"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("fullres/val_score")]
    assert logged == [(h["step"], pytest.approx(h["val_score"], abs=1e-6)) for h in training.history]


def test_a_trained_encoder_is_a_copy_and_the_classifier_stays_bit_equal(pipeline, tmp_path: Path, compose_cfg) -> None:
    overrides = ("fullres.steps=2", "fullres.supervised_encoder.trained=true", "fullres.supervised_encoder.lr=0.01")
    cfg = compose_cfg(*pipeline["overrides"], *overrides)
    assert recipe_of(cfg, "masks").train_encoder and not recipe_of(cfg, "cams").train_encoder  # never the weak decoder's
    net, before, training = train_one_decoder(pipeline, tmp_path, compose_cfg, "masks", *overrides)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    encoder = {k.removeprefix("encoder."): v for k, v in training.best_state.items() if k.startswith("encoder.")}
    assert encoder.keys() == before.keys()
    assert any(not torch.equal(before[k], encoder[k]) for k in before)  # the copy trained
    assert all(torch.equal(before[k], encoder[k]) for k in before if "running_" in k or "num_batches" in k)  # its BN statistics did not
    network = FullResolutionNet(net, train_encoder=True).eval()
    network.load_state_dict(training.best_state, strict=False)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, seg = network(images)
        assert torch.equal(logits, net.eval()(images))  # the classifier's own logits, not the copy's
        assert torch.equal(seg, network.decode(network.features(images)))
        assert torch.equal(seg.float().softmax(1)[:, 1], defect_map(network, images))  # the map alone: the copy's too
        assert not torch.equal(seg, network.decode(resnet_features(net, images)))  # not the classifier's features'
    # Over fewer stages, the copy keeps only those: no weights past the deepest layer are trained or stored.
    shallow = FullResolutionNet(net, (8, 8, 8), train_encoder=True, deepest_layer="layer2")
    assert not any(k.startswith(("encoder.layer3.", "encoder.layer4.")) for k in shallow.decoder_state())


@pytest.mark.parametrize(("image_channels", "train_encoder", "deepest"),
                         [(0, False, "layer4"), (4, False, "layer4"), (0, True, "layer4"), (0, False, "layer2")])
def test_a_stored_decoder_is_rebuilt_as_it_was_trained(tmp_path: Path, image_channels: int, train_encoder: bool,
                                                       deepest: str) -> None:
    import torchvision

    from defectcam.models.loading import file_sha1
    from defectcam.stages.fullres import decoder_path, load_decoder

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"a classifier")
    torch.manual_seed(0)
    classifier = torchvision.models.resnet18(num_classes=2).eval()
    trained = FullResolutionNet(classifier, (8, 8, 8), image_channels, train_encoder, deepest)
    if train_encoder:
        with torch.no_grad():
            trained.encoder.conv1.weight.mul_(2.0)  # the copy has moved away from the classifier
    record = {"decoder": trained.decoder_state(), "decoder_channels": [8, 8, 8], "image_channels": image_channels,
              "recipe": {"train_encoder": train_encoder}, "checkpoint_sha1": file_sha1(tmp_path / "checkpoints" / "best.ckpt")}
    if deepest != "layer4":  # records written before fullres.deepest_layer existed have none: layer4
        record["deepest_layer"] = deepest
    decoder_path(tmp_path, "supervised").parent.mkdir()
    torch.save(record, decoder_path(tmp_path, "supervised"))
    loaded, _ = load_decoder(tmp_path, "supervised", torchvision.models.resnet18(num_classes=2).eval())
    loaded.classifier.load_state_dict(classifier.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images)[1], trained.eval()(images)[1])
    assert loaded.deepest_layer == deepest
    record["image_channels"] = image_channels + 2  # a record that misdescribes its weights is refused, not half-loaded
    torch.save(record, decoder_path(tmp_path, "supervised"))
    with pytest.raises(StaleInputError, match="do not fit the network"):
        load_decoder(tmp_path, "supervised", torchvision.models.resnet18(num_classes=2).eval())


def corrupt_masks(out: Path, parts: tuple[str, ...]) -> None:
    """Invert every mask of the given parts in the problem's mask cache (ground truth the stage must not read)."""
    folder = out / "problem_1"
    split = pd.read_csv(folder / "split.csv")
    path = next((folder / "cache").glob("masks_*.npy"))
    masks = np.load(path)
    rows = split[split["part"].isin(parts) & (split["mask_row"] >= 0)]["mask_row"].to_numpy()
    assert len(rows)
    masks[rows] = ~masks[rows]
    np.save(path, masks)


def decoder_of(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "problem_1" / "fullres" / "decoder_fullres.pt", weights_only=True)["decoder"]


@pytest.mark.parametrize("supervision", ["cams", "masks"])
def test_only_validation_masks_decide_for_weak_supervision(pipeline, tmp_path: Path, compose_cfg, supervision: str) -> None:
    """Weak supervision: corrupting every train and test mask leaves the chosen decoder bit-equal. The reference
    trained on masks reads the train masks, so there the same corruption must change it (the check can fail)."""
    states = []
    for name, corrupted in (("clean", ()), ("corrupted", ("train", "test"))):
        out, overrides = private_copy(pipeline, tmp_path, name)
        if corrupted:
            corrupt_masks(out, corrupted)
        cfg = compose_cfg(*overrides, f"fullres.supervision=[{supervision}]", "fullres.force=true",
                          "fullres.start=[layercam/layer2,gradcam/layer3]")
        fullres_problem(cfg, prepare_data(cfg, show_progress=False)[1])
        method = "fullres" if supervision == "cams" else "supervised"
        path = out / "problem_1" / "fullres" / f"decoder_{method}.pt"
        selection = pd.read_csv(out / "problem_1" / "fullres" / "selection.csv").drop(columns="train_time_s")
        states.append((torch.load(path, weights_only=True)["decoder"], selection))
    (clean, clean_selection), (corrupted, corrupted_selection) = states
    same = all(torch.equal(clean[k], corrupted[k]) for k in clean)
    if supervision == "cams":
        assert same
        pd.testing.assert_frame_equal(clean_selection, corrupted_selection)
        assert len(clean_selection) == 2 and clean_selection["chosen"].sum() == 1  # chosen on validation, and said
    else:
        assert not same


@pytest.mark.parametrize(("select_on", "kept"), [("all_images", "layercam/layer2"), ("protocol", "gradcampp/layer2")])
def test_a_decoder_that_flags_defect_free_validation_images_loses_under_all_images(
        pipeline, compose_cfg, monkeypatch, select_on: str, kept: str) -> None:
    """Two starts: one decoder's validation maps are the true masks shrunk by a pixel (clean elsewhere), the other's
    the true masks plus a lit pixel on every defect-free image. mIoU alone prefers the second; the default score,
    all-mIoU at the same threshold, keeps the first. Both go through the stage's own selection and selection.csv rows."""
    import defectcam.stages.fullres as stage
    from defectcam.localization.entries import masks_tensor

    cfg = compose_cfg(*pipeline["overrides"], f"fullres.select_on={select_on}")
    data = prepare_data(cfg, show_progress=False)[1]
    rows = part_rows(data, "val")
    size = int(cfg.data.image_size)
    truth = masks_at(masks_tensor([data.mask_of(int(r)) for r in rows]), size).float()
    defective = torch.as_tensor(data.table["label"].to_numpy()[rows] == 1)
    assert bool(defective.any()) and bool((~defective).any())
    shrunk = -torch.nn.functional.max_pool2d(-truth.unsqueeze(1), 3, 1, 1)[:, 0]  # one pixel eroded: lower mIoU
    flagging = truth.clone()
    flagging[~defective, size // 2, size // 2] = 1.0
    probs = {"layercam/layer2": shrunk, "gradcampp/layer2": flagging}

    class Trained:
        def __init__(self, start: str, val_score) -> None:
            self.best_score, self.best_step, self.best_state = float(val_score(probs[start])), 0, {"start": torch.zeros(1)}

    monkeypatch.setattr(stage, "train_set", lambda cfg, data, net, norm, supervision, start, device: start)
    monkeypatch.setattr(stage, "train_decoder", lambda cfg, out, net, norm, recipe, start, val, name: Trained(start, val[1]))
    selection, chosen = train_decoders(cfg, data, None, (0.0, 1.0), torch.device("cpu"), list(probs), ["cams"])
    assert chosen["fullres"].start == kept
    assert [row["chosen"] for row in selection] == [row["layer"] == kept for row in selection]
    scored = {row["layer"]: row["val_score"] for row in selection}
    assert {row["val_score_of"] for row in selection} == {"all_miou" if select_on == "all_images" else "miou"}
    if select_on == "protocol":
        assert scored["gradcampp/layer2"] == pytest.approx(1.0)  # the lit pixels cost the mIoU nothing
    else:
        assert scored["gradcampp/layer2"] == pytest.approx(float(defective.float().mean()))  # every defect-free image lost


def test_fullres_select_on_keys_the_decoder_and_protocol_keeps_older_caches(pipeline, tmp_path: Path, compose_cfg) -> None:
    from defectcam.io import read_json, write_json
    from defectcam.stages.fullres import META_NAME, fullres_dir, fullres_meta, stale_fullres, training_key

    out, overrides = private_copy(pipeline, tmp_path)
    cfgs = {value: compose_cfg(*overrides, f"fullres.select_on={value}") for value in ("protocol", "all_images")}
    data = prepare_data(cfgs["protocol"], show_progress=False)[1]
    metas = {value: fullres_meta(cfg, data) for value, cfg in cfgs.items()}
    assert "select_on" not in metas["protocol"]["fullres"]  # what every decoder trained before the setting used
    assert metas["all_images"]["fullres"]["select_on"] == "all_images"
    assert training_key(metas["protocol"], "fullres") != training_key(metas["all_images"], "fullres")
    # A cache written before the setting existed (its meta without the key): fresh under protocol, stale under all_images.
    meta_path = fullres_dir(cfgs["protocol"], 1) / META_NAME
    recorded = read_json(meta_path)
    recorded["fullres"].pop("select_on", None)
    write_json(meta_path, recorded)
    assert stale_fullres(cfgs["protocol"], data)[2] is None
    assert stale_fullres(cfgs["all_images"], data)[2] is not None
    # Under localize.select_on=all_miou both values keep decoders by all-mIoU: one key, no retraining.
    both = [fullres_meta(compose_cfg(*overrides, f"fullres.select_on={value}", "localize.select_on=all_miou"), data)
            for value in ("protocol", "all_images")]
    assert both[0] == both[1]


def test_selection_rows_written_before_val_score_of_name_localizes_score(pipeline, tmp_path: Path, compose_cfg) -> None:
    from defectcam.stages.fullres import SELECTION_NAME, fullres_dir, fullres_meta, reusable_decoders

    out, overrides = private_copy(pipeline, tmp_path)
    cfg = compose_cfg(*overrides)
    data = prepare_data(cfg, show_progress=False)[1]
    path = fullres_dir(cfg, 1) / SELECTION_NAME
    pd.read_csv(path).drop(columns="val_score_of").to_csv(path, index=False)
    rows, chosen = reusable_decoders(out / "problem_1", fullres_meta(cfg, data))
    assert set(chosen) == {"fullres"} and [row["val_score_of"] for row in rows] == ["miou"]


def test_a_stale_decoder_cache_is_named_or_retrained(pipeline, tmp_path: Path) -> None:
    out, overrides = private_copy(pipeline, tmp_path)
    refused = run_cli("localize", *overrides, "fullres.lr=0.002", "on_stale=error")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
    assert "fullres.pt" in lines[0] and "defectcam-fullres" in lines[0] and "lr" in lines[0]
    report = run_cli("report", *overrides, "fullres.lr=0.002", "on_stale=error")
    assert report.returncode == 2 and "fullres.pt" in report.stderr
    retrained = run_cli("localize", *overrides, "fullres.lr=0.002")
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    assert run_cli("report", *overrides, "fullres.lr=0.002", "on_stale=error").returncode == 0


def test_the_deepest_layer_keys_the_decoder_and_its_default_keeps_older_caches(pipeline, compose_cfg) -> None:
    from defectcam.stages.fullres import fullres_meta, stale_fullres, training_key

    cfg = compose_cfg(*pipeline["overrides"])
    data = prepare_data(cfg, show_progress=False)[1]
    meta = fullres_meta(cfg, data)
    assert "deepest_layer" not in meta["fullres"]  # at layer4 the meta is what it was before the setting existed
    assert stale_fullres(cfg, data)[2] is None
    keys = [training_key(fullres_meta(compose_cfg(*pipeline["overrides"], f"fullres.deepest_layer={layer}",
                                                  "fullres.decoder_channels=[8,8,8]"), data), "fullres")
            for layer in ("layer4", "layer3", "layer2")]
    assert keys[0] != keys[1] != keys[2] != keys[0]  # the same blocks over other stages: another decoder to train


def test_a_decoder_over_layer1_and_layer2_is_stored_scored_and_predicted(pipeline, tmp_path: Path, compose_cfg) -> None:
    from defectcam.models.decoder_recipe import normalized
    from defectcam.stages.fullres import load_decoder
    from defectcam.stages.predict_check import compare_with_localize

    out, overrides = private_copy(pipeline, tmp_path)
    shallow = (*overrides, "fullres.deepest_layer=layer2", "fullres.decoder_channels=[8,8,8]")
    result = run_cli("localize", *shallow)  # a changed decoder setting retrains the decoder
    assert result.returncode == 0, result.stderr[-2000:]
    folder = out / "problem_1"
    assert (pd.read_csv(folder / "localization.csv")["method"] == "fullres").any()
    # The stored decoder is rebuilt over layer1 and layer2 only, and gives the maps the stage cached (float16 codes).
    cfg = compose_cfg(*shallow)
    data = prepare_data(cfg, show_progress=False)[1]
    module, _ = trained_problem(cfg, data, torch.device("cpu"))
    network, record = load_decoder(folder, "fullres", module.net)
    assert record["deepest_layer"] == network.deepest_layer == "layer2" and len(network.decoder.blocks) == 3
    test = load_fullres_cache(folder)["test"]
    images = normalized(torch.from_numpy(np.array(data.images[test["rows"].numpy()])), *module.hparams.normalization)
    with torch.no_grad():
        _, probs = defect_probabilities(network, images, record["tta"])
    cached = test["maps"]["fullres"]["layercam/layer2"].float()
    assert float((probs - cached).abs().max()) <= 1e-3
    # predict applies it, with the classifier's gate, deciding as localize did.
    inputs = Path(next(o for o in overrides if o.startswith("data.root=")).split("=", 1)[1]) / "Class1" / "Test"
    entry = ("predict.entry=fullres/layercam/layer2", "predict.gate=classifier")
    predicted = run_cli("predict", *shallow, *entry, f"predict.input={inputs}", f"predict.output={tmp_path / 'predicted'}")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    check = compare_with_localize(compose_cfg(*shallow, *entry), data, folder, tmp_path / "predicted")
    assert check["n"] == len(test["rows"]) and check["same_decisions"] == check["n"] and check["max_margin_difference"] < 1e-3
    assert check["min_iou"] >= 0.9 and check["mean_iou"] >= 0.98, check["images"]  # tiny masks: one pixel moves IoU 0.01


def test_each_method_keeps_its_decoder_when_only_the_other_methods_settings_change(pipeline, tmp_path: Path, compose_cfg) -> None:
    out, overrides = private_copy(pipeline, tmp_path)
    folder = out / "problem_1" / "fullres"
    selection_path = folder / "selection.csv"
    sentinel = 12345.0  # a training time no training here takes: a row keeping it was reused, not retrained

    def mark() -> None:
        pd.read_csv(selection_path).assign(train_time_s=sentinel).to_csv(selection_path, index=False)

    def run(*changes: str) -> list[tuple[str, bool]]:
        """(method, reused) per selection row, in the file's order."""
        cfg = compose_cfg(*overrides, *changes)
        fullres_problem(cfg, prepare_data(cfg, show_progress=False)[1])
        rows = pd.read_csv(selection_path)
        return [(method, time == sentinel) for method, time in zip(rows["method"], rows["train_time_s"], strict=True)]

    both, reference_lr, patch = "fullres.supervision=[cams,masks]", "fullres.supervised_encoder.lr=0.001", "fullres.seeds.patch=3"
    mark()
    # Adding the reference trains only the reference.
    assert run(both) == [("fullres", True), ("supervised", False)]
    weak = torch.load(folder / "decoder_fullres.pt", weights_only=True)
    mark()
    # The reference's own options leave the weak decoder as it is, recorded recipe included; the reference retrains.
    assert run(both, reference_lr) == [("fullres", True), ("supervised", False)]
    kept = torch.load(folder / "decoder_fullres.pt", weights_only=True)
    assert all(torch.equal(weak["decoder"][k], kept["decoder"][k]) for k in weak["decoder"])
    assert kept["recipe"] == weak["recipe"] and kept["recipe"]["encoder_lr"] != 0.001
    mark()
    # A seeding setting concerns the weak decoder only: it retrains, the reference is kept.
    assert run(both, reference_lr, patch) == [("fullres", False), ("supervised", True)]
    mark()
    # Another order of fullres.supervision reuses both, in that order.
    assert run("fullres.supervision=[masks,cams]", reference_lr, patch) == [("supervised", True), ("fullres", True)]
    # A reference dropped and asked for again retrains: its decoder file stayed, its selection rows did not.
    assert run("fullres.supervision=[cams]", reference_lr, patch) == [("fullres", True)]
    assert run(both, reference_lr, patch) == [("fullres", True), ("supervised", False)]


BAD_SETTINGS = [
    ("fullres.start=[layercam/layer9]", "fullres.start: 'layer9' is not in cam.layers"),
    ("fullres.start=[xgradcam/layer2]", "fullres.start: 'xgradcam' is not computed; add it to cam.methods"),
    ("fullres.start=[layercam]", "neither method/layer nor a cam.fusions name"),
    ("fullres.supervision=[pixels]", "fullres.supervision: 'pixels' is not one of cams, masks"),
    ("fullres.decoder_channels=[16,8,8,8,8,8]", "fullres.decoder_channels: [16, 8, 8, 8, 8, 8] must be 1 to 5 positive integers"),
    ("fullres.crop=8", "fullres.crop: 8 must be an integer >= 32"),
    ("fullres.image_channels=-1", "fullres.image_channels: -1 must be an integer >= 0"),
    ("fullres.supervised_encoder.trained=sometimes", "fullres.supervised_encoder.trained: 'sometimes' must be true or false"),
    ("fullres.supervised_encoder.lr=0", "fullres.supervised_encoder.lr: 0 must be a number >= 1e-12"),
    ("fullres.seeds.background_quantile=1.5", "fullres.seeds.background_quantile: 1.5 must be a number in"),
    ("fullres.tta=rotations", "fullres.tta: 'rotations' is not one of none, flips, dihedral"),
    ("fullres.select_on=miou", "fullres.select_on: 'miou' is not one of all_images, protocol"),
    ("fullres.deepest_layer=layer5", "fullres.deepest_layer: 'layer5' is not one of layer2, layer3, layer4"),
    ("fullres.deepest_layer=layer3", "fullres.decoder_channels: [128, 64, 32, 16, 16] must be 1 to 4 positive integers "
                                     "(one per decoder block, from fullres.deepest_layer layer3's scale up), e.g. [64, 32, 16, 16]"),
]


@pytest.mark.parametrize(("override", "message"), BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_bad_fullres_settings_are_one_line(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(override))
    assert "\n" not in str(info.value) and message in str(info.value)


def test_a_bad_fullres_setting_stops_the_cli_before_anything_is_written(tmp_path: Path) -> None:
    # Hydra's own run folder (its logs) goes elsewhere, so anything under `out` would be the stage's.
    override, message = BAD_SETTINGS[0]
    result = run_cli("fullres", f"paths.output_dir={tmp_path / 'out'}", f"data.root={tmp_path / 'none'}", override,
                     f"hydra.run.dir={tmp_path / 'hydra'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "none").exists()


def l_pattern(size: int = 32) -> torch.Tensor:
    """An L in one corner (no flip or turn maps it onto itself), as a 3-channel image."""
    image = torch.zeros(1, 3, size, size)
    image[0, :, 3:20, 5] = 3.0
    image[0, :, 19, 5:14] = 3.0
    return image


@pytest.mark.parametrize(("channels", "image_channels", "deepest"),
                         [((16, 8, 8, 8, 8), 0, "layer4"), ((16, 8, 8), 0, "layer4"), ((16, 8, 8), 4, "layer4"),
                          ((16, 8, 8), 0, "layer2")])
@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_decoder_tta_is_equivariant(tta: str, channels: tuple[int, ...], image_channels: int, deepest: str) -> None:
    import torchvision

    from defectcam.cams.tta import TTA_SETS

    torch.manual_seed(0)
    network = FullResolutionNet(torchvision.models.resnet18(num_classes=2), channels, image_channels,
                                deepest_layer=deepest).eval()
    image = l_pattern()
    _, probs = defect_probabilities(network, image, tta)
    for transform in TTA_SETS[tta]:
        _, moved = defect_probabilities(network, transform.apply(image), tta)
        assert torch.allclose(moved, transform.apply(probs), atol=1e-5), transform
    _, plain = defect_probabilities(network, image, "none")
    assert not torch.allclose(plain, probs, atol=1e-5)  # the average is not the plain map


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 5])
def test_a_shallower_decoder_is_upsampled_to_the_input(blocks: int) -> None:
    import torch.nn.functional as F
    import torchvision


    torch.manual_seed(0)
    network = FullResolutionNet(torchvision.models.resnet18(num_classes=2), (8,) * blocks).eval()
    images = torch.randn(2, 3, 64, 64)
    logits, seg = network(images)
    assert logits.shape == (2, 2) and seg.shape == (2, 2, 64, 64)
    features = resnet_features(network.classifier, images)
    coarse = network.head(network.decoder(features))
    assert coarse.shape[-1] == 64 // 2 ** (5 - blocks)  # each block doubles layer4's 1/32 scale
    expected = coarse if blocks == 5 else F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(seg, expected, atol=1e-6)


@pytest.mark.parametrize(("deepest", "blocks"), [("layer3", 4), ("layer3", 2), ("layer2", 3), ("layer2", 1)])
def test_a_decoder_over_fewer_stages_runs_only_those_for_its_map(deepest: str, blocks: int) -> None:
    import torchvision


    torch.manual_seed(0)
    classifier = torchvision.models.resnet18(num_classes=2).eval()
    network = FullResolutionNet(classifier, (8,) * blocks, deepest_layer=deepest).eval()
    calls = {name: 0 for name in ("layer2", "layer3", "layer4")}
    for name in calls:
        getattr(classifier, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        alone = defect_map(network, images, "flips")
        assert calls == {name: 4 if name <= deepest else 0 for name in calls}  # one pass per flip, none past the deepest
        logits, probs = defect_probabilities(network, images, "flips")
        assert calls["layer4"] == 1  # the gate's logits need the whole classifier, once
        assert torch.equal(logits, classifier(images)) and torch.equal(alone, probs)
        assert network.decoder_logits(images).shape == (2, 2, 64, 64)
    # the map reads nothing past the deepest layer, and does read that layer
    with torch.no_grad():
        before = defect_map(network, images, "none")
        for name in calls:
            if name > deepest:
                getattr(classifier, name)[0].conv1.weight.mul_(3.0)
        assert torch.equal(defect_map(network, images, "none"), before)
        getattr(classifier, deepest)[0].conv1.weight.mul_(3.0)
        assert not torch.equal(defect_map(network, images, "none"), before)


@pytest.mark.parametrize(("deepest", "blocks", "side"), [("layer4", 5, 64), ("layer4", 3, 64), ("layer2", 3, 64), ("layer4", 5, 40)])
def test_the_decoder_runs_as_smp_runs_it_bit_for_bit(deepest: str, blocks: int, side: int, monkeypatch) -> None:
    import torch.nn.functional as F
    import torchvision

    from defectcam.fullres import unet_forward

    torch.manual_seed(0)
    network = FullResolutionNet(torchvision.models.resnet18(num_classes=2), (8,) * blocks, deepest_layer=deepest).eval()
    features = resnet_features(network.classifier, torch.randn(2, 3, side, side), deepest)
    with torch.no_grad():
        expected = network.decoder(features)  # smp's own forward
    calls = []
    interpolate = F.interpolate
    monkeypatch.setattr(unet_forward.F, "interpolate", lambda *a, **k: calls.append(k["size"]) or interpolate(*a, **k))
    with torch.no_grad():
        assert torch.equal(unet_forward.decode(network.decoder, features), expected)
    # at a side that is a multiple of 32 every block doubles its input: no F.interpolate; at 40 (sizes 2, 3, 5, 10,
    # 20, 40) only the blocks that do not double call it
    assert calls == ([] if side % 32 == 0 else [(3, 3), (5, 5)])
    calls.clear()
    with torch.enable_grad():  # a training step keeps PyTorch's own op, whose backward pass decoders were trained with
        assert torch.equal(unet_forward.decode(network.decoder, features), expected)
    assert len(calls) == blocks


def test_an_exported_graph_keeps_the_upsampling_op() -> None:
    """onnxruntime runs its Resize faster than the Expand + Reshape of the eager repeat, so export traces the op."""
    from defectcam.fullres import unet_forward

    class Upsample(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return unet_forward.upsample_nearest(x, (8, 8))

    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        graph = str(torch.export.export(Upsample(), (x,)).graph)
        assert "upsample_nearest2d" in graph and "expand" not in graph
        assert torch.equal(Upsample()(x), torch.nn.functional.interpolate(x, size=(8, 8), mode="nearest"))


@pytest.mark.parametrize("blocks", [3, 5])
def test_the_image_branch_is_a_skip_at_the_input_scale(blocks: int, monkeypatch) -> None:
    import torchvision

    from defectcam.fullres import unet_forward

    torch.manual_seed(0)
    network = FullResolutionNet(torchvision.models.resnet18(num_classes=2), (8,) * blocks, image_channels=4).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        coarse = network.decoder(resnet_features(network.classifier, images))
    # the decoder's output held fixed: only the branch sees the image
    monkeypatch.setattr(unet_forward, "decode", lambda decoder, features: coarse)
    moved = images.clone()
    moved[0, :, 30, 30] += 5.0
    with torch.no_grad():
        change = (network(moved)[1] - network(images)[1]).abs().amax(dim=(0, 1))
    # a one-pixel change reaches the map through the branch (3x3, then 3x3 dilated 2), the fuse and the head (3x3
    # each): within 5 pixels of it, and nowhere else
    assert float(change[30, 30]) > 0
    near = torch.zeros(64, 64, dtype=torch.bool)
    near[25:36, 25:36] = True
    assert float(change[~near].max()) == 0.0
    plain = FullResolutionNet(torchvision.models.resnet18(num_classes=2), (8,) * blocks).eval()
    with torch.no_grad():
        assert float((plain(moved)[1] - plain(images)[1]).abs().max()) == 0.0  # without it, no input-scale path


def test_the_ablation_script_scores_each_variant_beside_the_run(pipeline, tmp_path: Path) -> None:
    out, overrides = private_copy(pipeline, tmp_path)
    run_rows = (out / "problem_1" / "localization.csv").read_bytes()
    # A training time no training here takes: a variant showing it was given the run's decoders, not retrained.
    selection_path = out / "problem_1" / "fullres" / "selection.csv"
    pd.read_csv(selection_path).assign(train_time_s=12345.0).to_csv(selection_path, index=False)
    script = Path(__file__).resolve().parents[1] / "scripts" / "fullres_ablation.py"
    # a name with brackets (no Hydra override value can hold them) still gets a folder
    result = run_script(script, *overrides, "--variant", "flips (TTA)=fullres.tta=flips", "--variant", "no negatives=fullres.negatives=false",
                        "--variant", "reference=fullres.supervision=[masks]", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "ablation" / "ablation.csv")
    test = table[table["split"] == "test"]
    assert {"no negatives", "reference: supervised reference"} <= set(test["variant"])
    assert test["variant"].str.startswith("best CAM").any()  # the run's own best CAM entry, beside the variants
    assert set(test.loc[test["variant"] == "no negatives", "method"]) == {"fullres"}
    assert set(test.loc[test["variant"] == "reference: supervised reference", "method"]) == {"supervised"}
    assert (out / "problem_1" / "localization.csv").read_bytes() == run_rows  # the run itself is only read
    # a TTA-only variant scores the run's own decoder (reused, not retrained); one that changes training trains its own
    def train_time(variant: str) -> float:
        return float(pd.read_csv(out / "ablation" / variant / "problem_1" / "fullres" / "selection.csv")["train_time_s"].iloc[0])

    assert train_time("flips__TTA_") == 12345.0 and train_time("no_negatives") != 12345.0
    assert "flips (TTA)" in set(test["variant"])


def test_the_decoders_progress_bar_names_the_decoder_not_a_cut_version() -> None:
    from types import SimpleNamespace

    from defectcam.models.decoder_module import DecoderProgressBar

    trainer = SimpleNamespace(loggers=[SimpleNamespace(version="layercam_layer2")], progress_bar_metrics={"train/loss": 0.5})
    bar = DecoderProgressBar("layercam_layer2")
    assert bar.get_metrics(trainer, None) == {"train/loss": 0.5}  # Lightning's own bar adds v_num 'yer2'
