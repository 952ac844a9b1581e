"""defectcam-export on the tiny pipeline: the ONNX file in onnxruntime and the torch.export file against PyTorch,
the metadata, predict.backend=onnx giving predict's own masks and decisions for a decoder and a CAM entry, and
the exported files predict refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import built_once, copy_overrides, middle_of_widest_gap, private_copy, rewrite_json, run_cli
from defectcam.errors import ConfigError, ModelError, StageOrderError, StaleInputError
from defectcam.export.runtime import OnnxLocalizer
from defectcam.export.writers import write_program
from defectcam.fullres.maps import defect_probabilities
from defectcam.models.loading import file_sha1, load_classifier
from defectcam.stages.cams import load_cam_cache
from defectcam.stages.export import export_settings
from defectcam.stages.fullres import load_decoder
from defectcam.stages.predict import run_predict

ENTRY = ("predict.entry=fullres/layercam/layer2", "predict.gate=none")


def class1_test_folder(pipeline: dict[str, Any]) -> Path:
    root = Path(next(o for o in pipeline["overrides"] if o.startswith("data.root=")).split("=", 1)[1])
    return root / "Class1" / "Test"


@pytest.fixture(scope="session")
def exported(pipeline: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny pipeline's decoder entry exported (ONNX and torch.export) into a copy of its own, once per test session
    (also across xdist workers); the tests only read it."""

    def build(base: Path) -> None:
        _, overrides = private_copy(pipeline, base, link=True)
        result = run_cli("export", *overrides, *ENTRY)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "localizer.onnx, localizer.pt2, localizer.json written" in result.stdout

    out = built_once(tmp_path_factory, "exported", build) / "out"
    folder = out / "problem_1" / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["localizer.json", "localizer.onnx", "localizer.pt2"]  # no temp file left
    return {"problem": out / "problem_1", "folder": folder, "overrides": [*copy_overrides(pipeline, out), *ENTRY]}


def test_the_files_carry_the_entry_threshold_and_gate(exported: dict[str, Any]) -> None:
    folder, problem = exported["folder"], exported["problem"]
    model = onnx.load(folder / "localizer.onnx", load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    sidecar = json.loads((folder / "localizer.json").read_text())
    rows = pd.read_csv(problem / "localization.csv")
    scored = rows[(rows["method"] == "fullres") & (rows["layer"] == "layercam/layer2") & (rows["split"] == "val")
                  & (rows["selection"] == "val-best") & (rows["gate"] == "none") & (rows["postprocess"] == "none")]
    decision = json.loads((problem / "localization_meta.json").read_text())["decision_threshold"]
    expected = {"method": "fullres", "layer": "layercam/layer2", "gate": "none", "postprocess": "none",
                "threshold": float(scored.iloc[0]["threshold"]), "decision_threshold": decision, "opset": 18, "image_size": 32,
                "tta": "none", "checkpoint_sha1": file_sha1(problem / "checkpoints" / "best.ckpt"),
                "decoder_sha1": file_sha1(problem / "fullres" / "decoder_fullres.pt")}
    for key, value in expected.items():
        assert sidecar[key] == value, key
        assert props[key] == (value if isinstance(value, str) else json.dumps(value)), key
    assert len(sidecar["normalization"]) == 2 and json.loads(props["normalization"]) == sidecar["normalization"]
    assert [(o.domain, o.version) for o in model.opset_import if o.domain == ""] == [("", 18)]
    (gray,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in gray.type.tensor_type.shape.dim] == ["batch", 1, 32, 32]
    assert [o.name for o in model.graph.output] == sidecar["output_names"] == ["logit_margin", "defect_probability"]
    assert sidecar["export_format"] == 2 and "cam_method" not in sidecar  # no CAM in a decoder entry's graph
    assert sidecar["onnx_check"]["max_probability_difference"] <= 1e-4
    extra = {"localizer.json": ""}
    torch.export.load(folder / "localizer.pt2", extra_files=extra)
    assert json.loads(extra["localizer.json"])["threshold"] == expected["threshold"]


def test_onnxruntime_and_torch_export_agree_with_pytorch(exported: dict[str, Any], pipeline: dict[str, Any]) -> None:
    problem, folder = exported["problem"], exported["folder"]
    files = sorted(class1_test_folder(pipeline).glob("*.PNG"))[:5]
    gray = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("L"))).float().div(255.0) for f in files])[:, None]
    gray = torch.cat([gray, torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))])  # 7: not the traced batch
    # PyTorch as predict runs it: the normalized 3-channel batch through defect_probabilities.
    module = load_classifier(problem / "checkpoints" / "best.ckpt")
    network, record = load_decoder(problem, "fullres", module.net)
    mean, std = module.hparams.normalization
    with torch.no_grad():
        logits, probs = defect_probabilities(network, ((gray - mean) / std).expand(-1, 3, -1, -1), record["tta"])
    margins = logits[:, 1] - logits[:, 0]
    decision = json.loads((folder / "localizer.json").read_text())["decision_threshold"]
    onnx_margins, onnx_probs = OnnxLocalizer(folder / "localizer.onnx")(gray)
    program = torch.export.load(folder / "localizer.pt2").module()
    with torch.no_grad():
        pt2_margins, pt2_probs = program(gray)
    for got_margins, got_probs in ((onnx_margins, onnx_probs), (pt2_margins, pt2_probs)):
        assert got_probs.shape == (7, 32, 32)
        assert float((got_probs - probs).abs().max()) <= 1e-4
        assert float((got_margins - margins).abs().max()) <= 1e-4
        assert torch.equal(got_margins > decision, margins > decision)


def test_the_onnx_backend_gives_predicts_masks_and_decisions(exported: dict[str, Any], pipeline: dict[str, Any], tmp_path: Path) -> None:
    outputs = {}
    for backend in ("torch", "onnx"):
        outputs[backend] = tmp_path / backend
        result = run_cli("predict", *exported["overrides"], f"predict.input={class1_test_folder(pipeline)}",
                         f"predict.output={outputs[backend]}", f"predict.backend={backend}")
        assert result.returncode == 0, result.stderr[-3000:]
    torch_rows, onnx_rows = (pd.read_csv(outputs[b] / "predictions.csv") for b in ("torch", "onnx"))
    assert len(torch_rows) == 24 and list(torch_rows["image"]) == list(onnx_rows["image"])
    assert list(torch_rows["defect"]) == list(onnx_rows["defect"])
    assert np.abs(torch_rows["logit_margin"] - onnx_rows["logit_margin"]).max() <= 1e-4
    assert list(torch_rows["mask_pixels"]) == list(onnx_rows["mask_pixels"]) and torch_rows["mask_pixels"].sum() > 0
    for mask in torch_rows["mask"]:
        assert (outputs["torch"] / mask).read_bytes() == (outputs["onnx"] / mask).read_bytes(), mask


def test_the_exported_file_alone_predicts_as_the_run_folder_does(exported: dict[str, Any], pipeline: dict[str, Any],
                                                                 compose_cfg, tmp_path: Path) -> None:
    """predict.model on a copy of localizer.onnx and nothing else (no experiment folder, checkpoint or entry setting)
    writes what predict.backend=onnx writes from the run folder, byte for byte."""
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    shutil.copy(exported["folder"] / "localizer.onnx", deployed)
    images = f"predict.input={class1_test_folder(pipeline)}"
    run_predict(compose_cfg(*exported["overrides"], images, f"predict.output={tmp_path / 'run'}", "predict.backend=onnx"))
    # predict.gate may repeat the file's own gate; predict.backend, data.problems and the experiment are not read
    result = run_cli("predict", f"predict.model={deployed}", f"paths.output_dir={tmp_path / 'no_run'}", images,
                     f"predict.output={tmp_path / 'alone'}", "predict.gate=none", "data.problems=[2]")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "no_run").iterdir()] == ["hydra"]  # Hydra's log, nothing of a run
    run_rows = (tmp_path / "run" / "predictions.csv").read_bytes()
    assert (tmp_path / "alone" / "predictions.csv").read_bytes() == run_rows
    for mask in pd.read_csv(tmp_path / "run" / "predictions.csv")["mask"]:
        assert (tmp_path / "alone" / mask).read_bytes() == (tmp_path / "run" / mask).read_bytes(), mask


def test_the_exported_program_alone_predicts_as_pytorch_does(exported: dict[str, Any], pipeline: dict[str, Any],
                                                             compose_cfg, tmp_path: Path) -> None:
    """predict.model on a copy of localizer.pt2 alone runs torch.export's program in PyTorch (no onnxruntime): the
    masks and decisions of predict.backend=torch from the run folder."""
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    shutil.copy(exported["folder"] / "localizer.pt2", deployed)
    images = f"predict.input={class1_test_folder(pipeline)}"
    run_predict(compose_cfg(*exported["overrides"], images, f"predict.output={tmp_path / 'run'}", "predict.backend=torch"))
    # the folder holds only the .pt2, so it is the one chosen; predict.backend may repeat its own (torch)
    run_predict(compose_cfg(f"predict.model={deployed}", f"paths.output_dir={tmp_path / 'no_run'}", images,
                            f"predict.output={tmp_path / 'alone'}", "predict.backend=torch"))
    run_rows, alone_rows = (pd.read_csv(tmp_path / name / "predictions.csv") for name in ("run", "alone"))
    assert list(alone_rows["image"]) == list(run_rows["image"]) and list(alone_rows["defect"]) == list(run_rows["defect"])
    assert np.abs(alone_rows["logit_margin"] - run_rows["logit_margin"]).max() <= 1e-4
    assert list(alone_rows["mask_pixels"]) == list(run_rows["mask_pixels"]) and run_rows["mask_pixels"].sum() > 0
    for mask in run_rows["mask"]:
        assert (tmp_path / "alone" / mask).read_bytes() == (tmp_path / "run" / mask).read_bytes(), mask
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a program")
    (tmp_path / "model.bin").write_bytes(b"")

    class ThreeOutputs(torch.nn.Module):  # the file's metadata name two outputs, its program makes three
        def forward(self, gray: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return gray.mean((1, 2, 3)), gray[:, 0], gray[:, 0] * 2

    metadata = json.loads((exported["folder"] / "localizer.json").read_text())
    write_program(ThreeOutputs(), tmp_path / "three.pt2", int(metadata["image_size"]), metadata)
    io = (images, f"predict.output={tmp_path / 'o'}", f"paths.output_dir={tmp_path / 'r'}")
    for extra, error, message in (
        ((f"predict.model={deployed / 'localizer.pt2'}", "predict.backend=onnx"), ConfigError, "with its own backend 'torch'"),
        ((f"predict.model={garbage}",), ModelError, "garbage.pt2: torch.export cannot load it"),
        ((f"predict.model={tmp_path / 'model.bin'}",), ConfigError, "model.bin is neither localizer.onnx nor localizer.pt2"),
        ((f"predict.model={tmp_path / 'three.pt2'}",), ModelError,
         "three.pt2: outputs output_0, output_1, output_2, but its entry fullres/layercam/layer2 is made of logit_margin, "
         "defect_probability"),
    ):
        with pytest.raises(error, match=message):
            run_predict(compose_cfg(*io, *extra))
    assert not (tmp_path / "o").exists()


def test_an_exported_file_predict_cannot_read_alone_is_one_line(exported: dict[str, Any], pipeline: dict[str, Any],
                                                                compose_cfg, tmp_path: Path) -> None:
    original = exported["folder"] / "localizer.onnx"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file")
    edited = {}
    # an older layout; an entry its outputs do not make; a size its graph does not take
    for key, value in (("export_format", "1"), ("method", "layercam"), ("image_size", "64")):
        model = onnx.load(original)
        next(p for p in model.metadata_props if p.key == key).value = value
        edited[key] = tmp_path / f"{key}.onnx"
        onnx.save(model, edited[key])
    cases = [
        ((f"predict.model={original}", "predict.entry=layercam/layer2"), ConfigError, "predict.entry: an exported file"),
        # the file was exported ungated, with no post-process: its threshold is that entry's, not another's
        ((f"predict.model={original}", "predict.gate=classifier"), ConfigError,
         f"predict.gate: 'classifier', but predict.model runs {original} with its own gate 'none'"),
        ((f"predict.model={original}", "predict.postprocess=ellipse"), ConfigError, "with its own postprocess 'none'"),
        ((f"predict.model={original}", "predict.backend=torch"), ConfigError, "with its own backend 'onnx'"),
        ((f"predict.model={tmp_path / 'absent.onnx'}",), ConfigError, "absent.onnx does not exist"),
        ((f"predict.model={garbage}",), ModelError, "garbage.onnx: onnxruntime cannot load it"),
        ((f"predict.model={edited['export_format']}",), ModelError, "export_format.onnx: export_format '1', this defectcam reads 2"),
        ((f"predict.model={edited['method']}",), ModelError, "method.onnx: its metadata has no 'cam_method'"),
        ((f"predict.model={edited['image_size']}",), ModelError,
         r"image_size.onnx: its graph takes gray \['batch', 1, 32, 32\], not gray \[N, 1, 64, 64\]"),
    ]
    io = (f"predict.input={class1_test_folder(pipeline)}", f"predict.output={tmp_path / 'o'}", f"paths.output_dir={tmp_path / 'r'}")
    for extra, error, message in cases:
        with pytest.raises(error, match=message):
            run_predict(compose_cfg(*io, *extra))
    # from the command line: one line, exit 2, nothing written
    result = run_cli("predict", *io, f"predict.model={garbage}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"defectcam-predict: error: {garbage}: onnxruntime cannot load it"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["garbage.onnx", "r", *(f"{key}.onnx" for key in edited)])


CAM_ENTRY = ("predict.entry=gradcampp/layer4", "predict.gate=classifier")


def test_a_cam_entry_exports_with_its_backward_pass_and_predicts_the_same(pipeline: dict[str, Any], compose_cfg,
                                                                         tmp_path: Path) -> None:
    """A CAM entry (gradients in the graph; layer4: the shortest backward pass, the tiny pipeline is a ResNet-50), gated
    by the classifier: its metadata, then predict on onnxruntime against predict on PyTorch."""
    out, overrides = private_copy(pipeline, tmp_path, link=True)
    overrides = [*overrides, *CAM_ENTRY]
    # The gate must pass some test images and stop others for the comparison to test it: the decision localize
    # recorded moves into the widest gap between the test images' margins (the export and both backends read it).
    margins = load_cam_cache(out / "problem_1")["test"]["logit_margin"]
    rewrite_json(out / "problem_1" / "localization_meta.json", decision_threshold=middle_of_widest_gap(margins.tolist()))
    result = run_cli("export", *overrides, "export.formats=[onnx]")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / "problem_1" / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["localizer.json", "localizer.onnx"]
    sidecar = json.loads((folder / "localizer.json").read_text())
    assert {k: sidecar[k] for k in ("method", "layer", "gate", "cam_method", "cam_layers", "cam_target", "cam_tta")} == {
        "method": "gradcampp", "layer": "layer4", "gate": "classifier", "cam_method": "gradcampp", "cam_layers": ["layer4"],
        "cam_target": 1, "cam_tta": "none"}
    assert sidecar["output_names"] == ["logit_margin", "cam_layer4"] and "decoder_sha1" not in sidecar
    assert sidecar["onnx_check"]["cam_layer4_mean_difference"] <= 1e-3
    outputs = {}
    for backend in ("torch", "onnx"):  # in this process: the CLI's own path is the export's, above
        outputs[backend] = tmp_path / backend
        run_predict(compose_cfg(*overrides, f"predict.input={class1_test_folder(pipeline)}", f"predict.output={outputs[backend]}",
                                f"predict.backend={backend}"))
    torch_rows, onnx_rows = (pd.read_csv(outputs[b] / "predictions.csv") for b in ("torch", "onnx"))
    assert list(torch_rows["defect"]) == list(onnx_rows["defect"]) and 0 < torch_rows["defect"].sum() < len(torch_rows)
    assert np.abs(torch_rows["logit_margin"] - onnx_rows["logit_margin"]).max() <= 1e-4
    assert torch_rows["mask_pixels"].sum() > 0
    for mask in torch_rows["mask"]:
        torch_mask, onnx_mask = (np.array(Image.open(outputs[b] / mask)) > 0 for b in ("torch", "onnx"))
        # maps within 1e-4 of their peak: a pixel at the threshold itself may fall either way
        assert (torch_mask != onnx_mask).sum() <= max(1, torch_mask.sum() // 100), mask
    # the file alone (predict.model) predicts what the run folder's onnx backend did
    run_predict(compose_cfg(f"predict.model={folder / 'localizer.onnx'}", f"paths.output_dir={tmp_path / 'no_run'}",
                            f"predict.input={class1_test_folder(pipeline)}", f"predict.output={tmp_path / 'alone'}"))
    assert (tmp_path / "alone" / "predictions.csv").read_bytes() == (outputs["onnx"] / "predictions.csv").read_bytes()
    for mask in onnx_rows["mask"]:
        assert (tmp_path / "alone" / mask).read_bytes() == (outputs["onnx"] / mask).read_bytes(), mask
    # a file whose CAMs were averaged over another TTA set is another localizer
    model = onnx.load(folder / "localizer.onnx")
    next(p for p in model.metadata_props if p.key == "cam_tta").value = "flips"
    onnx.save(model, folder / "localizer.onnx")
    with pytest.raises(StaleInputError, match="exported with cam_tta='flips', but predict now has 'none'"):
        run_predict(compose_cfg(*overrides, f"predict.input={class1_test_folder(pipeline)}", f"predict.output={tmp_path / 'x'}",
                                "predict.backend=onnx"))


def test_the_onnx_backend_refuses_what_it_cannot_trust(exported: dict[str, Any], pipeline: dict[str, Any], compose_cfg,
                                                      tmp_path: Path) -> None:
    shared = [*(o for o in pipeline["overrides"] if not o.startswith("data.problems=")), "data.problems=[1]", *ENTRY]
    io = (f"predict.input={class1_test_folder(pipeline)}", f"predict.output={tmp_path / 'o'}")
    cases = [
        (exported["overrides"], ("predict.backend=tensorrt",), ConfigError, "predict.backend: 'tensorrt' is not one of torch, onnx"),
        # exported for the decoder entry: another entry is another localizer
        (exported["overrides"], ("predict.backend=onnx", "predict.entry=layercam/layer2"), StaleInputError,
         "exported with method='fullres', but predict now has 'layercam'"),
        # exported with gate none: another gate is another localizer
        (exported["overrides"], ("predict.backend=onnx", "predict.gate=classifier"), StaleInputError, "exported with gate='none'"),
        # the shared pipeline was never exported
        (shared, ("predict.backend=onnx",), StageOrderError, "localizer.onnx: missing; export it first (make export)"),
    ]
    for overrides, extra, error, message in cases:
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_predict(compose_cfg(*overrides, *io, *extra))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("override", "message"), [("export.formats=[tflite]", "export.formats"), ("export.opset=11", "export.opset")])
def test_export_settings_are_checked(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        export_settings(compose_cfg(override))


# (16, 8, 8): a 1/4-scale map whose logits are upsampled in the graph; with 4 image channels, the decoded features
# are upsampled instead, to meet the input-scale branch
# layer2: a decoder over the stem, layer1 and layer2 (its 3 blocks reach the input), the gate's logits still in the graph
@pytest.mark.parametrize(("channels", "image_channels", "deepest"),
                         [((16, 8, 8, 8, 8), 0, "layer4"), ((16, 8, 8), 0, "layer4"), ((16, 8, 8), 4, "layer4"),
                          ((16, 8, 8), 0, "layer2")])
def test_the_decoders_tta_is_inside_the_graph(tmp_path: Path, one_thread: None, channels: tuple[int, ...], image_channels: int,
                                              deepest: str) -> None:
    from torchvision.models import resnet18

    from defectcam.export import OPSET
    from defectcam.export.writers import write_onnx
    from defectcam.fullres.network import FullResolutionNet
    from defectcam.localization.entry_network import EntryNetwork, entry_parts

    torch.manual_seed(0)  # random weights: their maps are not flip-equivariant, so the TTA average shows
    network = FullResolutionNet(resnet18(num_classes=2), channels, image_channels, deepest_layer=deepest).eval()
    parts = entry_parts("fullres", "layercam/layer2", {})
    entry_network = EntryNetwork(network.classifier, (0.4, 0.1), parts, decoder=network, decoder_tta="flips")
    check = write_onnx(entry_network, tmp_path / "l.onnx", 32, OPSET, {"tta": "flips"}, parts.output_names())
    assert check["max_probability_difference"] <= 1e-4
    gray = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    images = ((gray - 0.4) / 0.1).expand(-1, 3, -1, -1)
    with torch.no_grad():
        (_, flips), (_, plain) = defect_probabilities(network, images, "flips"), defect_probabilities(network, images, "none")
    _, got = OnnxLocalizer(tmp_path / "l.onnx")(gray)
    assert float((got - flips).abs().max()) <= 1e-4 < float((got - plain).abs().max())
