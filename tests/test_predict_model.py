"""predict.model reads an exported file's metadata alone: every kind of entry comes back as the run would build it
(a fusion as cam.fusions defines it), and every value it cannot trust is one line. Plain dicts, no model: the
files themselves are tests/test_export.py's and tests/test_export_gradients.py's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from defectcam.errors import ModelError
from defectcam.export import EXPORT_FORMAT
from defectcam.localization.entries import Fusion, fusions_from
from defectcam.localization.entry_network import EntryParts, EntrySources
from defectcam.stages.predict import Entry, localizer_identity
from defectcam.stages.predict_model import stored_entry

PATH = Path("model.onnx")
# cam.fusions as the experiments configure them: layercam_fused (layercam mode), multiplicative (product, geometric)
CONFIGURED = {f.name: f for f in fusions_from({"layercam_fused": {"method": "layercam", "layers": ["layer2", "layer3"]},
                                               "multiplicative": {"method": "gradcam", "layers": ["layer1", "layer2", "layer3"]}})}


def metadata(**values: Any) -> dict[str, str]:
    """A CAM entry's metadata as ONNX metadata_props hold them (strings; JSON for anything else), with `values` over it."""
    base = {"export_format": EXPORT_FORMAT, "method": "gradcampp", "layer": "layer2", "postprocess": "ellipse",
            "gate": "classifier", "threshold": 0.21, "decision_threshold": -0.5, "image_size": 256, "problem": 1,
            "cam_method": "gradcampp", "cam_layers": ["layer2"]}
    merged = {key: value for key, value in {**base, **values}.items() if value is not None}
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in merged.items()}


def test_a_cam_entry_comes_back_with_its_thresholds() -> None:
    problem, entry, decision, size, fusions = stored_entry(PATH, metadata())
    assert (problem, decision, size, fusions) == (1, -0.5, 256, {})
    assert entry == Entry("gradcampp", "layer2", "ellipse", "classifier", 0.21, None)


def test_a_product_keeps_its_decoder_threshold() -> None:
    _, entry, *_ = stored_entry(PATH, metadata(method="fullres_x_gradcampp", decoder_threshold=0.9, gate="none"))
    assert (entry.method, entry.decoder_threshold, entry.gate) == ("fullres_x_gradcampp", 0.9, "none")


@pytest.mark.parametrize("name", sorted(CONFIGURED))
def test_each_fusion_mode_comes_back_as_configured(name: str) -> None:
    fusion = CONFIGURED[name]
    *_, fusions = stored_entry(PATH, metadata(method=name, layer="+".join(fusion.layers), cam_method=fusion.method,
                                              cam_layers=list(fusion.layers), fusion_mode=fusion.mode))
    assert fusions == {name: fusion}


BAD = {
    "a bool for a number": ({"threshold": True}, "metadata threshold='true' is not a float"),
    "NaN": ({"threshold": "NaN"}, "metadata threshold='NaN' is not a float"),
    "a float image size": ({"image_size": 256.0}, "metadata image_size='256.0' is not a int"),
    "a quoted number": ({"decision_threshold": '"0.5"'}, "metadata decision_threshold='\"0.5\"' is not a float"),
    "a number past float": ({"decision_threshold": "1" + "0" * 400}, "metadata decision_threshold='1000"),
    "an absent key": ({"image_size": None}, "its metadata has no 'image_size'"),
    "another layout": ({"export_format": 1}, "export_format '1', this defectcam reads 2"),
    "an unknown gate": ({"gate": "always"}, "metadata gate='always' is not one of none, classifier"),
    "no DAGM problem": ({"problem": 99}, "metadata problem=99 is not a DAGM problem"),
    "a threshold below 0": ({"threshold": -1}, r"metadata threshold=-1.0 is outside \[0, 1\]"),
    "a decoder threshold above 1": ({"method": "fullres_x_gradcampp", "decoder_threshold": 2},
                                    r"metadata decoder_threshold=2.0 is outside \[0, 1\]"),
    "a tiny image": ({"image_size": 16}, "metadata image_size=16 is below 32"),
    "an unknown fusion mode": ({"method": "layercam_fused", "layer": "layer2+layer3", "cam_layers": ["layer2", "layer3"],
                                "fusion_mode": "mean"}, "fusion_mode='mean' .* is no fusion"),
    "a fusion mode on a plain method": ({"fusion_mode": "layercam"}, "fusion_mode='layercam' with method='gradcampp'"),
    "a fusion layer that is not its layers": ({"method": "layercam_fused", "layer": "layer2", "cam_layers": ["layer2", "layer3"],
                                               "fusion_mode": "layercam"}, "layer='layer2' and cam_layers"),
    "a fusion without its mode": ({"method": "layercam_fused", "layer": "layer2+layer3"},
                                  "method='layercam_fused' is a fusion with no 'fusion_mode'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_value_it_cannot_trust_is_one_line_naming_the_file(case: str) -> None:
    values, message = BAD[case]
    with pytest.raises(ModelError, match=message) as raised:
        stored_entry(PATH, metadata(**values))
    assert str(raised.value).startswith("model.onnx: ") and "\n" not in str(raised.value)


def test_the_run_folders_identity_carries_a_fusions_mode(tmp_path: Path) -> None:
    """What export writes and predict.backend=onnx checks: a fusion's mode, so a file of another mode is refused."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    fusion: Fusion = CONFIGURED["multiplicative_geometric"]
    sources = EntrySources(EntryParts(None, fusion.method, fusion.layers), 1, "none", "none", fusion.mode)
    entry = Entry(fusion.name, "+".join(fusion.layers), "none", "none", 0.3)
    identity = localizer_identity(tmp_path, entry, 0.0, sources, 64)
    assert identity["fusion_mode"] == "geometric" and identity["cam_layers"] == list(fusion.layers)
    plain = EntrySources(EntryParts(None, "gradcam", ("layer2",)), 1, "none", "none")
    assert "fusion_mode" not in localizer_identity(tmp_path, Entry("gradcam", "layer2", "none", "none", 0.3), 0.0, plain, 64)
