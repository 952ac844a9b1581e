"""`defectcam-export`: per problem, the classifier and the full-resolution decoder of predict's entry as one model.

    defectcam-export paths.output_dir=outputs/quick data.problems=[1] predict.entry=fullres/layercam/layer2

The entry is the one predict would apply (predict.entry / predict.gate / predict.postprocess, or the protocol's
choice); only a decoder entry can be exported: a CAM needs gradients. Writes problem_<k>/export/localizer.onnx
(onnxruntime), localizer.pt2 (torch.export) and localizer.json (the metadata, also inside both files), each
atomically; the model takes gray (N, 1, S, S) images in [0, 1] and returns the logit margin and the defect
probability map (docs/export.md).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from defectcam.data.prepare import problem_dir
from defectcam.errors import ConfigError
from defectcam.export import FILES, FOLDER, INPUT_NAME, OPSET, OUTPUT_NAMES, SIDECAR
from defectcam.fullres import DECODER_METHODS
from defectcam.localization.entries import BASELINE_LAYER
from defectcam.models.loading import load_classifier
from defectcam.stages.fullres import load_decoder
from defectcam.stages.predict import Entry, localizer_identity, predict_entry, scored_settings
from defectcam.stages.settings import output_dir, problems_of, validate
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)
MIN_OPSET = OPSET  # the torch.export-based exporter emits opset 18 and later natively


def export_settings(cfg: DictConfig) -> tuple[list[str], int]:
    """(export.formats, export.opset), each checked (one line naming the setting and the choices)."""
    formats = OmegaConf.select(cfg, "export.formats")
    if not OmegaConf.is_list(formats) or not formats or any(str(f) not in FILES for f in formats):
        raise ConfigError(f"export.formats: {OmegaConf.to_container(formats) if OmegaConf.is_list(formats) else formats!r} "
                          f"must be a non-empty list of {', '.join(FILES)}")
    opset = OmegaConf.select(cfg, "export.opset")
    newest = newest_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"export.opset: {opset!r} must be an integer in [{MIN_OPSET}, {newest}] (the torch.export-based "
                          "ONNX exporter writes 18 or later; the installed onnx knows up to the upper bound)")
    return list(dict.fromkeys(str(f) for f in formats)), opset


def newest_opset() -> int:
    """The newest ONNX opset the installed onnx knows (OPSET when onnx is missing: the onnx format is then refused anyway)."""
    if importlib.util.find_spec("onnx") is None:
        return OPSET
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())


def exportable_entries(folder: Path) -> list[str]:
    """The decoder entries (method/layer) localize scored in a problem folder's localization.csv."""
    rows = pd.read_csv(folder / "localization.csv")
    decoders = rows[rows["method"].isin(list(DECODER_METHODS.values())) & (rows["layer"] != BASELINE_LAYER)]
    return sorted({f"{m}/{layer}" for m, layer in zip(decoders["method"], decoders["layer"])})


def check_exportable(cfg: DictConfig, folder: Path, entry: Entry) -> None:
    """One line when `entry` is a CAM entry, naming the exportable (decoder) entries."""
    if entry.method in DECODER_METHODS.values():
        return
    known = exportable_entries(folder)
    choice = "predict.entry" if cfg.predict.entry is not None else f"the protocol's choice (gate {entry.gate})"
    offer = (f"exportable entries: {', '.join(known)} (predict.entry=...)" if known
             else "no decoder entry was scored; train one with make fullres, then make localize")
    raise ConfigError(f"{entry.method}/{entry.layer} ({choice}, {folder / 'localization.csv'}) is a CAM entry (needs gradients), "
                      f"it cannot be exported; {offer}")


def export_metadata(folder: Path, problem: int, entry: Entry, decision: float, record: dict[str, Any], opset: int) -> dict[str, Any]:
    """What the exported files carry: predict's identity of the localizer (entry, thresholds, SHA-1s) and how to feed it."""
    size = int(record["image_size"])
    return {**localizer_identity(folder, entry, decision, size), "problem": problem, "opset": opset,
            "normalization": [float(v) for v in record["normalization"]], "tta": str(record["tta"]),
            "input": f"{INPUT_NAME}: float32 (N, 1, {size}, {size}), gray in [0, 1], resized (area) to {size} px",
            "outputs": f"{OUTPUT_NAMES[0]}: (N,) logit[1] - logit[0]; {OUTPUT_NAMES[1]}: (N, {size}, {size}) in [0, 1]",
            "rule": f"defect where {OUTPUT_NAMES[0]} > decision_threshold; mask = {OUTPUT_NAMES[1]} >= threshold"
                    f"{', emptied where not defect' if entry.gate == 'classifier' else ''}"
                    f"{', then the ellipse post-process (not in the graph)' if entry.postprocess == 'ellipse' else ''}"}


def export_problem(cfg: DictConfig, problem: int, formats: list[str], opset: int) -> Path:
    """Write one problem's localizer files (formats asked for, and the sidecar); returns the export folder."""
    from defectcam.export.graph import Localizer  # the writers import onnx lazily; keep the stage's import light
    from defectcam.export.writers import check_onnx_packages, write_onnx, write_program, write_sidecar

    folder = problem_dir(output_dir(cfg), problem)
    entry = predict_entry(cfg, folder)
    check_exportable(cfg, folder, entry)
    if "onnx" in formats:
        check_onnx_packages()
    _, decision = scored_settings(folder)
    module = load_classifier(folder / "checkpoints" / "best.ckpt")  # on the CPU: the files are device-free
    network, record = load_decoder(folder, entry.method, module.net)
    metadata = export_metadata(folder, problem, entry, decision, record, opset)
    localizer = Localizer(network, tuple(record["normalization"]), str(record["tta"]))
    out, size, check = folder / FOLDER, int(record["image_size"]), {}
    log.info("problem %d: exporting %s/%s (post-process %s, gate %s, threshold %.4g, TTA %s) as %s", problem, entry.method,
             entry.layer, entry.postprocess, entry.gate, entry.threshold, record["tta"], ", ".join(formats))
    if "onnx" in formats:
        check = write_onnx(localizer, out / FILES["onnx"], size, opset, metadata)
    if "torch" in formats:
        write_program(localizer, out / FILES["torch"], size, metadata)
    for name in set(FILES) - set(formats):  # a file of an earlier export would not match the sidecar
        (out / FILES[name]).unlink(missing_ok=True)
    write_sidecar(out / SIDECAR, metadata, {name: FILES[name] for name in formats}, check)
    return out


def run_export(cfg: DictConfig) -> dict[int, Path]:
    """Export every problem of data.problems; returns each one's export folder."""
    validate(cfg)
    formats, opset = export_settings(cfg)
    folders = {}
    for problem in problems_of(cfg):
        folders[problem] = export_problem(cfg, problem, formats, opset)
        files = ", ".join([FILES[name] for name in formats] + [SIDECAR])
        print(f"defectcam-export: problem {problem}: {files} written to {folders[problem]}")
    return folders


main = stage_entry("export", run_export)
