"""Entries that need gradients (a CAM, a fusion, a product) exported with their backward pass in the graph: the
frozen convolution's input gradient against autograd, and the ONNX / torch.export files against PyTorch's own maps
at batch sizes other than the traced one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from defectcam.errors import ModelError
from defectcam.export import EXPORT_FORMAT, OPSET
from defectcam.export.gradient_graph import convolution_input_gradient, traced_entry
from defectcam.export.runtime import OnnxLocalizer
from defectcam.export.writers import example_input, write_onnx, write_program
from defectcam.fullres.network import FullResolutionNet
from defectcam.localization.entries import fusions_from
from defectcam.localization.entry_network import EntryNetwork, EntryParts, entry_parts
from defectcam.stages.predict import Predictor
from defectcam.stages.predict_model import model_predictor

SIZE, NORMALIZATION = 32, (0.4, 0.1)


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups", "side"),
                         [(1, 1, 1, 1, 9), (2, 1, 1, 1, 9), (2, 1, 1, 1, 10), (2, 3, 1, 1, 11), (1, 2, 2, 1, 8), (2, 0, 1, 2, 7)])
def test_the_convolution_input_gradient_is_autograds(stride: int, padding: int, dilation: int, groups: int, side: int) -> None:
    """Odd and even sides under a stride: conv_transpose2d alone would give back the wrong size without the output padding."""
    generator = torch.Generator().manual_seed(side + stride)
    inputs = torch.randn(2, 4, side, side + 1, generator=generator, requires_grad=True)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=generator)
    output = F.conv2d(inputs, weight, None, stride, padding, dilation, groups)
    grad_output = torch.randn(output.shape, generator=generator)
    (expected,) = torch.autograd.grad(output, inputs, grad_output)
    got, no_weight, no_bias = convolution_input_gradient(grad_output, inputs.detach(), weight, None, [stride] * 2, [padding] * 2,
                                                          [dilation] * 2, False, [0, 0], groups, [True, False, False])
    assert got.shape == inputs.shape and no_weight is None and no_bias is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def tiny_resnet() -> nn.Module:
    """A one-block-per-stage ResNet, random but with BatchNorm statistics that keep its CAMs from vanishing."""
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=2).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, SIZE, SIZE))
        model.fc.weight[1].abs_()  # positive evidence for class 1 somewhere
    return model.eval()


FUSIONS = {f.name: f for f in fusions_from({"layercam_fused": {"method": "layercam", "layers": ["layer2", "layer3"]}})}
CASES = {  # (method, layer, target, CAM TTA, decoder TTA)
    "product, one shared pass": ("fullres_x_gradcampp", "layer2", 1, "none", "none"),  # the TTA: the next case
    "product, a pass each, predicted class": ("fullres_x_layercam", "layer3", "predicted", "flips", "none"),
    "fusion": ("layercam_fused", "layer2+layer3", 1, "none", "none"),
    # fullres.train_encoder: the decoder reads a trained copy's features, so the CAM needs a pass of its own
    "product, decoder over a trained encoder": ("fullres_x_gradcam", "layer3", 1, "none", "none"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_entry_with_cams_exports_as_pytorch_computes_it(case: str, tmp_path: Path, one_thread: None) -> None:
    method, layer, target, cam_tta, decoder_tta = CASES[case]
    classifier = tiny_resnet()
    parts = entry_parts(method, layer, FUSIONS)
    decoder = FullResolutionNet(classifier, (8, 8, 8), train_encoder="trained encoder" in case).eval() if parts.decoder else None
    if decoder is not None and decoder.encoder is not None:
        with torch.no_grad():  # a trained copy: its weights are no longer the classifier's
            for parameter in decoder.encoder.parameters():
                parameter.mul_(1.1)
    network = EntryNetwork(classifier, NORMALIZATION, parts, target, cam_tta, decoder, decoder_tta)
    assert network.shares_pass() == (case == "product, one shared pass")
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    graph = traced_entry(network, example_input(SIZE))
    check = write_onnx(graph, tmp_path / "l.onnx", SIZE, OPSET, standalone_metadata(method, layer, parts), parts.output_names(),
                       reference=network)
    # tracing swaps fake tensors into the modules: the real weights must be back, unchanged
    assert all(type(p) is nn.Parameter for p in network.parameters())
    assert all(torch.equal(tensor, before[name]) for name, tensor in network.state_dict().items())
    assert set(check) >= {"max_margin_difference", *(f"cam_{name}_mean_difference" for name in parts.cam_layers)}
    exported = {"onnx": OnnxLocalizer(tmp_path / "l.onnx")}
    assert exported["onnx"].output_names == parts.output_names()
    if case == "product, one shared pass":  # torch.export's file, from the same traced graph
        write_program(graph, tmp_path / "l.pt2", SIZE, standalone_metadata(method, layer, parts))
        exported["pt2"] = torch.export.load(tmp_path / "l.pt2").module()
    for batch in (1, 4):  # traced at 2, checked at 3 by write_onnx
        gray = torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        expected = network(gray)
        for backend, model in exported.items():
            for name, got, want in zip(parts.output_names(), model(gray), expected, strict=True):
                assert got.shape == want.shape, (backend, name)
                if name.startswith("cam_"):  # raw CAMs, relative to each map's peak (this small network keeps it tight)
                    assert float(want.abs().amax()) > 0, name
                    error = float(((got - want).abs() / want.flatten(1).abs().amax(1)[:, None, None]).max())
                else:
                    error = float((got - want).abs().max())
                assert error <= 1e-4, (backend, name, error)
    # predict.model: the file alone, its entry and fusion read back from its metadata, maps as predict makes them
    gray = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    for name in ("l.onnx", *(["l.pt2"] if "pt2" in exported else [])):  # the .pt2 runs in PyTorch, no onnxruntime
        asked = {"entry": None, "model": str(tmp_path / name), "gate": None, "postprocess": None, "backend": None}
        problem, alone = model_predictor(OmegaConf.create({"predict": asked}))
        assert problem == 4 and alone.parts == parts and alone.entry.decoder_threshold == (0.25 if parts.decoder else None)
        run = Predictor(network, parts, alone.entry, 0.0, SIZE, FUSIONS)
        (margins, maps), (run_margins, run_maps) = alone.maps(gray), run.maps(gray)
        assert float((margins - run_margins).abs().max()) <= 1e-4, name
        for j in range(3):
            got, want = maps[j]((48, 40)), run_maps[j]((48, 40))
            assert got.shape == (1, 48, 40) and float(want.amax()) > 0
            assert float((got - want).abs().mean()) <= 1e-3, (name, j)
    if cam_tta != "none":  # the TTA is in the graph: the exported CAM is not the plain one
        network.cam_tta = network.decoder_tta = "none"
        plain = network(gray)[-1]
        assert float((exported["onnx"](gray)[-1] - plain).abs().max()) > 1e-3 * float(plain.abs().amax())


def standalone_metadata(method: str, layer: str, parts: EntryParts) -> dict[str, Any]:
    """What predict.model reads from an exported file (defectcam-export writes these and more)."""
    fusion = FUSIONS.get(method)
    return {"export_format": EXPORT_FORMAT, "method": method, "layer": layer, "postprocess": "none", "gate": "none",
            "threshold": 0.5, "decision_threshold": 0.0, "image_size": SIZE, "problem": 4, "output_names": parts.output_names(),
            "cam_method": parts.cam_method, "cam_layers": list(parts.cam_layers),
            **({"decoder_threshold": 0.25} if parts.decoder else {}), **({"fusion_mode": fusion.mode} if fusion else {})}


def test_the_check_refuses_a_graph_that_is_not_its_network(tmp_path: Path, one_thread: None) -> None:
    """A CAM traced without TTA, checked against the same network with flips: whole maps move, nothing is written."""
    parts = entry_parts("gradcampp", "layer3", {})
    plain = EntryNetwork(tiny_resnet(), NORMALIZATION, parts, 1, "none")
    flipped = EntryNetwork(tiny_resnet(), NORMALIZATION, parts, 1, "flips")
    with pytest.raises(ModelError, match="onnxruntime differs from torch on a check batch"):
        write_onnx(traced_entry(plain, example_input(SIZE)), tmp_path / "l.onnx", SIZE, OPSET, {}, parts.output_names(),
                   reference=flipped)
    assert list(tmp_path.iterdir()) == []
