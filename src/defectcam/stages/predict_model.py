"""predict.model: an exported localizer.onnx applied on its own, with no experiment folder, checkpoint or config.

The file's metadata (written by defectcam-export, docs/export.md) holds everything predict needs besides the graph:
the entry, its thresholds, the gate's decision threshold, the input size, the post-process, and what the outputs
are (a decoder's probabilities, one CAM method's raw maps at its layers, a fusion's mode). So a deployment machine
needs the one file (and onnxruntime); what the run folder would add is the check that the file is still the run's
choice, which `predict.backend=onnx` makes when the run folder is there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from defectcam.cams.methods import METHODS
from defectcam.errors import ConfigError, ModelError
from defectcam.export import EXPORT_FORMAT, FILES
from defectcam.localization.entries import Fusion
from defectcam.localization.entry_network import entry_parts
from defectcam.stages.predict import GATES, MIN_SIDE, Entry, Predictor

POSTPROCESS = ("none", "ellipse")
FUSION_MODES = ("layercam", "product", "geometric")


def model_path(value: Any) -> Path:
    """predict.model as a localizer.onnx path: the file itself, or an export folder holding it (else one line)."""
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = path / FILES["onnx"]
    if not path.is_file():
        raise ConfigError(f"predict.model: {path} does not exist (give an exported {FILES['onnx']} or the folder holding it)")
    return path


def stored_value(path: Path, stored: dict[str, str], key: str, kind: type, optional: bool = False) -> Any:
    """One metadata value parsed as `kind` (a string as stored, anything else as JSON); one line when it is absent
    (unless optional: None) or of another kind."""
    if key not in stored:
        if optional:
            return None
        raise ModelError(f"{path}: its metadata has no {key!r}; re-export it with defectcam-export")
    text = stored[key]
    try:
        value = text if kind is str else json.loads(text)
    except json.JSONDecodeError:
        value = None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is float and not math.isfinite(value)):
        raise ModelError(f"{path}: metadata {key}={text!r} is not a {kind.__name__}")
    return value


def stored_entry(path: Path, stored: dict[str, str]) -> tuple[Entry, float, int, dict[str, Fusion]]:
    """(the entry with its thresholds, the decision threshold, the input size, the entry's fusion by name) from
    an exported file's metadata, each value checked."""
    layout = stored.get("export_format")
    if layout != json.dumps(EXPORT_FORMAT):
        raise ModelError(f"{path}: export_format {layout!r}, this defectcam reads {EXPORT_FORMAT}; re-export it with defectcam-export")
    text = {key: stored_value(path, stored, key, str) for key in ("method", "layer", "postprocess", "gate")}
    for key, choices in (("postprocess", POSTPROCESS), ("gate", GATES)):
        if text[key] not in choices:
            raise ModelError(f"{path}: metadata {key}={text[key]!r} is not one of {', '.join(choices)}")
    threshold, decision = stored_value(path, stored, "threshold", float), stored_value(path, stored, "decision_threshold", float)
    size = stored_value(path, stored, "image_size", int)
    if size < MIN_SIDE:
        raise ModelError(f"{path}: metadata image_size={size} is below {MIN_SIDE}")
    entry = Entry(text["method"], text["layer"], text["postprocess"], text["gate"], threshold,
                  stored_value(path, stored, "decoder_threshold", float, optional=True))
    mode = stored_value(path, stored, "fusion_mode", str, optional=True)
    fusions = {}
    if mode is not None:
        if mode not in FUSION_MODES:
            raise ModelError(f"{path}: metadata fusion_mode={mode!r} is not one of {', '.join(FUSION_MODES)}")
        layers = stored_value(path, stored, "cam_layers", list)
        fusions[entry.method] = Fusion(entry.method, stored_value(path, stored, "cam_method", str), tuple(map(str, layers)), mode)
    return entry, decision, size, fusions


def model_predictor(cfg: DictConfig) -> tuple[int, Predictor]:
    """predict.model's file as (its DAGM problem, a Predictor over it in onnxruntime); one line for a file that is
    missing, not an exported localizer, or whose metadata disagree with its outputs."""
    if cfg.predict.entry is not None:
        raise ConfigError("predict.entry: an exported file (predict.model) applies its own entry; leave predict.entry unset")
    path = model_path(cfg.predict.model)
    from defectcam.export.runtime import OnnxLocalizer  # onnxruntime is an optional extra

    localizer = OnnxLocalizer(path)
    stored = localizer.metadata
    entry, decision, size, fusions = stored_entry(path, stored)
    parts = entry_parts(entry.method, entry.layer, fusions)
    if parts.cam_method is not None:  # what the graph's CAMs are: a known method at the entry's own layers
        cam = (stored_value(path, stored, "cam_method", str), tuple(map(str, stored_value(path, stored, "cam_layers", list))))
        if cam[0] not in METHODS or cam != (parts.cam_method, parts.cam_layers):
            raise ModelError(f"{path}: metadata cam_method={cam[0]!r}, cam_layers={list(cam[1])} do not make the entry "
                             f"{entry.method}/{entry.layer}; re-export it with defectcam-export")
    names = parts.output_names()
    if localizer.output_names != names or stored_value(path, stored, "output_names", list) != names:
        raise ModelError(f"{path}: outputs {', '.join(localizer.output_names)}, but its entry {entry.method}/{entry.layer} "
                         f"is made of {', '.join(names)}; re-export it with defectcam-export")
    if parts.decoder is not None and parts.cam_method is not None and entry.decoder_threshold is None:
        raise ModelError(f"{path}: a product entry ({entry.method}) with no decoder_threshold in its metadata; re-export it")
    problem = stored_value(path, stored, "problem", int)
    return problem, Predictor(localizer, parts, entry, decision, size, fusions)
