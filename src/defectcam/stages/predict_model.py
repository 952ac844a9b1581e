"""predict.model: an exported localizer applied on its own, with no experiment folder, checkpoint or localize table:
localizer.onnx in onnxruntime, or localizer.pt2 (torch.export's program of the same graph) in PyTorch.

The file's metadata (written by defectcam-export, docs/export.md) hold everything predict needs besides the graph:
the problem, the entry, its thresholds, the gate's decision threshold, the input size, the post-process, and what
the outputs are (a decoder's probabilities, one CAM method's raw maps at its layers, a fusion's mode). A deployment
machine still runs defectcam itself (its predict code, torch, Hydra), with onnxruntime for the ONNX file, on the
CPU, but needs nothing of the run; what the run folder would add is the check that the file is still the run's choice, which
`predict.backend=onnx` makes when the run folder is there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from defectcam.cams.methods import METHODS
from defectcam.errors import ConfigError, ModelError
from defectcam.export import EXPORT_FORMAT, FILES, INPUT_NAME
from defectcam.fullres import DECODER_METHODS
from defectcam.localization.entries import FUSION_MODES, Fusion
from defectcam.localization.entry_network import entry_parts
from defectcam.localization.products import product_cam
from defectcam.localization.selection import GATES, POSTPROCESSES
from defectcam.stages.predict import MIN_SIDE, Entry, Predictor
from defectcam.stages.settings import DAGM_PROBLEMS


BACKENDS = {".onnx": "onnx", ".pt2": "torch"}  # an exported file's suffix -> the predict.backend that runs it


def model_path(value: Any) -> Path:
    """predict.model as an exported file: localizer.onnx or localizer.pt2 itself, or an export folder holding one
    (localizer.onnx first); else one line."""
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = next((path / name for name in (FILES["onnx"], FILES["torch"]) if (path / name).is_file()), path / FILES["onnx"])
    if not path.is_file():
        raise ConfigError(f"predict.model: {path} does not exist (give an exported {FILES['onnx']} or {FILES['torch']}, "
                          "or the folder holding one)")
    if path.suffix.lower() not in BACKENDS:
        raise ConfigError(f"predict.model: {path} is neither {FILES['onnx']} nor {FILES['torch']} (by its suffix)")
    return path


def model_backend(path: Path) -> str:
    """The predict.backend that runs an exported file (model_path checked its suffix)."""
    return BACKENDS[path.suffix.lower()]


def stored_value(path: Path, stored: dict[str, str], key: str, kind: type, optional: bool = False) -> Any:
    """One metadata value parsed as `kind` (a string as stored, anything else as JSON; an integer where a float is
    asked); one line when it is absent (unless optional: None) or not of that kind."""
    if key not in stored:
        if optional:
            return None
        raise ModelError(f"{path}: its metadata has no {key!r}; re-export it with defectcam-export")
    text = stored[key]
    try:
        value = text if kind is str else json.loads(text)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
    except (ValueError, OverflowError):  # not JSON, or a number beyond what Python parses or a float holds
        value = None
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is float and not math.isfinite(value)):
        raise ModelError(f"{path}: metadata {key}={text[:80]!r} is not a {kind.__name__}")
    return value


def stored_share(path: Path, stored: dict[str, str], key: str, optional: bool = False) -> float | None:
    """A threshold on [0, 1] maps: a float in [0, 1] (else one line)."""
    value = stored_value(path, stored, key, float, optional)
    if value is not None and not 0.0 <= value <= 1.0:
        raise ModelError(f"{path}: metadata {key}={value!r} is outside [0, 1] (the maps it thresholds are)")
    return value


def stored_fusions(path: Path, stored: dict[str, str], method: str, layer: str) -> dict[str, Fusion]:
    """The entry's fusion by name when the metadata describe one (fusion_mode), else {}; a CAM entry that is no
    known method is a fusion exported before fusion_mode existed."""
    mode = stored_value(path, stored, "fusion_mode", str, optional=True)
    plain = method in METHODS or method in DECODER_METHODS.values() or product_cam(method) is not None
    if mode is None:
        if not plain:
            raise ModelError(f"{path}: metadata method={method!r} is a fusion with no 'fusion_mode' (exported before "
                             "2026-12-07) or no entry defectcam knows; re-export it with defectcam-export")
        return {}
    layers = tuple(map(str, stored_value(path, stored, "cam_layers", list)))
    if plain or mode not in FUSION_MODES or layer != "+".join(layers) or len(layers) < 2:
        raise ModelError(f"{path}: metadata fusion_mode={mode!r} with method={method!r}, layer={layer!r} and cam_layers="
                         f"{list(layers)} is no fusion (modes {', '.join(FUSION_MODES)}; the layer names its cam_layers)")
    return {method: Fusion(method, stored_value(path, stored, "cam_method", str), layers, mode)}


def stored_entry(path: Path, stored: dict[str, str]) -> tuple[int, Entry, float, int, dict[str, Fusion]]:
    """(the DAGM problem, the entry with its thresholds, the decision threshold, the input size, the entry's fusion
    by name) from an exported file's metadata, each value checked."""
    layout = stored.get("export_format")
    if layout != json.dumps(EXPORT_FORMAT):
        raise ModelError(f"{path}: export_format {layout!r}, this defectcam reads {EXPORT_FORMAT}; re-export it with defectcam-export")
    text = {key: stored_value(path, stored, key, str) for key in ("method", "layer", "postprocess", "gate")}
    for key, choices in (("postprocess", POSTPROCESSES), ("gate", GATES)):
        if text[key] not in choices:
            raise ModelError(f"{path}: metadata {key}={text[key]!r} is not one of {', '.join(choices)}")
    problem, size = stored_value(path, stored, "problem", int), stored_value(path, stored, "image_size", int)
    if problem not in DAGM_PROBLEMS:
        raise ModelError(f"{path}: metadata problem={problem} is not a DAGM problem (1..10)")
    if size < MIN_SIDE:
        raise ModelError(f"{path}: metadata image_size={size} is below {MIN_SIDE}")
    entry = Entry(text["method"], text["layer"], text["postprocess"], text["gate"], stored_share(path, stored, "threshold"),
                  stored_share(path, stored, "decoder_threshold", optional=True))
    decision = stored_value(path, stored, "decision_threshold", float)
    return problem, entry, decision, size, stored_fusions(path, stored, entry.method, entry.layer)


def check_asked(cfg: DictConfig, path: Path, entry: Entry) -> None:
    """predict.* settings a file fixes may be left unset or repeat the file's value; anything else is one line (a
    threshold chosen under one gate or post-process is not the protocol's under another; a file runs on its own
    backend)."""
    if cfg.predict.entry is not None:
        raise ConfigError("predict.entry: an exported file (predict.model) applies its own entry; leave predict.entry unset")
    for key, value in (("gate", entry.gate), ("postprocess", entry.postprocess), ("backend", model_backend(path))):
        asked = cfg.predict[key]
        if asked is not None and str(asked) != value:
            raise ConfigError(f"predict.{key}: {asked!r}, but predict.model runs {path} with its own {key} {value!r}; leave "
                              f"predict.{key} unset, or export the entry you want (make export)")


def check_graph(path: Path, inputs: list[tuple[str, list[Any]]], size: int) -> None:
    """The graph takes what the metadata say: one input `gray` of (N, 1, size, size) (`inputs`: (name, shape) each)."""
    shape = inputs[0][1] if len(inputs) == 1 else []
    if len(inputs) != 1 or inputs[0][0] != INPUT_NAME or len(shape) != 4 or shape[1:] != [1, size, size]:
        found = ", ".join(f"{name} {shape}" for name, shape in inputs)
        raise ModelError(f"{path}: its graph takes {found}, not {INPUT_NAME} [N, 1, {size}, {size}] as its metadata "
                         "(image_size) say; re-export it with defectcam-export")


def model_predictor(cfg: DictConfig) -> tuple[int, Predictor]:
    """predict.model's file as (its DAGM problem, a Predictor over it in onnxruntime, or in PyTorch for a .pt2); one
    line for a file that is missing, not an exported localizer, or whose metadata disagree with its graph, and for
    predict.* settings that ask for another entry."""
    path = model_path(cfg.predict.model)
    from defectcam.export.runtime import OnnxLocalizer, ProgramLocalizer  # onnxruntime is an optional extra

    localizer = (OnnxLocalizer if model_backend(path) == "onnx" else ProgramLocalizer)(path)
    stored = localizer.metadata
    problem, entry, decision, size, fusions = stored_entry(path, stored)
    check_asked(cfg, path, entry)
    check_graph(path, localizer.inputs, size)
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
    return problem, Predictor(localizer, parts, entry, decision, size, fusions)
