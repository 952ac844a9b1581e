"""`defectcam-export`: per problem, predict's entry (the classifier with its decoder and/or CAMs) as one model.

    defectcam-export paths.output_dir=outputs/quick data.problems=[1] predict.entry=fullres/layercam/layer2

The entry is the one predict would apply (predict.entry / predict.gate / predict.postprocess, or the protocol's
choice): a decoder entry, a CAM entry, a fusion or a product. An entry with CAMs carries its backward pass in the
graph (export/gradient_graph.py). Writes problem_<k>/export/localizer.onnx (onnxruntime), localizer.pt2
(torch.export) and localizer.json (the metadata, also inside both files), each atomically; the model takes gray
(N, 1, S, S) images in [0, 1] and returns the logit margin, then the defect probability map and/or the raw CAMs
the entry's map is made from (docs/export.md).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from defectcam.data.prepare import problem_dir
from defectcam.errors import ConfigError, DefectcamError, ModelError, one_line
from defectcam.export import FILES, FOLDER, INPUT_NAME, OPSET, SIDECAR
from defectcam.localization.entry_network import MARGIN, PROBABILITY, EntryNetwork, EntrySources
from defectcam.stages.predict import Entry, entry_network, localizer_identity, predict_entry, scored_settings
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


def export_metadata(folder: Path, problem: int, entry: Entry, decision: float, network: EntryNetwork,
                    sources: EntrySources, size: int, opset: int) -> dict[str, Any]:
    """What the exported files carry: predict's identity of the localizer (entry, thresholds, SHA-1s, CAM settings)
    and how to feed it and read its outputs."""
    parts, names = network.parts, network.parts.output_names()
    described = {MARGIN: "(N,) logit[1] - logit[0]", PROBABILITY: f"(N, {size}, {size}) in [0, 1]"}
    outputs = "; ".join(f"{name}: {described.get(name, '(N, h, w) raw CAM, not normalized')}" for name in names)
    if entry.decoder_threshold is not None:
        built = (f"map = {PROBABILITY} x min-max({names[-1]} upsampled), zero where max({PROBABILITY}) < decoder_threshold")
    elif parts.decoder is not None:
        built = f"map = {PROBABILITY}"
    elif len(parts.cam_layers) == 1:
        built = f"map = min-max({names[-1]} upsampled)"
    else:
        built = f"map = {entry.method} fusion of min-max({', '.join(names[1:])} upsampled)"
    rounded = " and ".join([*([f"{PROBABILITY} to float16"] if parts.decoder else []),
                            *(["each raw CAM to float16 codes of its own range, (raw - min) / (max - min) (a flat map's span: 1), "
                                "decoded back"] if parts.cam_layers else [])])
    return {**localizer_identity(folder, entry, decision, sources, size), "problem": problem, "opset": opset,
            "normalization": [network.mean, network.std], "output_names": names,
            "input": f"{INPUT_NAME}: float32 (N, 1, {size}, {size}), gray in [0, 1], resized (area) to {size} px",
            "outputs": outputs,
            "rule": f"defect where {MARGIN} > decision_threshold; round {rounded}, the precision localize's caches keep; {built} "
                    f"(bilinear to the image's size); mask = map >= threshold"
                    f"{', emptied where not defect' if entry.gate == 'classifier' else ''}"
                    f"{', then the ellipse post-process (not in the graph)' if entry.postprocess == 'ellipse' else ''}"}


def export_problem(cfg: DictConfig, problem: int, formats: list[str], opset: int) -> Path:
    """Write one problem's localizer files (formats asked for, and the sidecar); returns the export folder."""
    # the writers import onnx and the tracer lazily; keep the stage's import light
    from defectcam.export.gradient_graph import traced_entry
    from defectcam.export.writers import check_onnx_packages, example_input, write_onnx, write_program, write_sidecar

    folder = problem_dir(output_dir(cfg), problem)
    entry = predict_entry(cfg, folder)
    if "onnx" in formats:
        check_onnx_packages()
    meta, decision = scored_settings(folder)
    network, sources, _ = entry_network(cfg, folder, entry, meta)  # on the CPU: the files are device-free
    size, parts = int(meta["image_size"]), network.parts
    metadata = export_metadata(folder, problem, entry, decision, network, sources, size, opset)
    out, check = folder / FOLDER, {}
    log.info("problem %d: exporting %s/%s (post-process %s, gate %s, threshold %.4g%s) as %s", problem, entry.method,
             entry.layer, entry.postprocess, entry.gate, entry.threshold,
             "".join(f", {key} {metadata[key]}" for key in ("tta", "cam_tta", "cam_target") if key in metadata), ", ".join(formats))
    try:
        # A CAM needs a backward pass, which torch.export does not record: trace it first (export/gradient_graph.py).
        graph = traced_entry(network, example_input(size)) if parts.cam_method is not None else network
        if "onnx" in formats:
            check = write_onnx(graph, out / FILES["onnx"], size, opset, metadata, parts.output_names(), reference=network)
        if "torch" in formats:
            write_program(graph, out / FILES["torch"], size, metadata)
    except DefectcamError:
        raise
    except Exception as exc:  # the tracer's or an exporter's own (a guard, an operator without an ONNX rule)
        raise ModelError(f"{folder / 'checkpoints' / 'best.ckpt'}: {entry.method}/{entry.layer} could not be exported "
                         f"({type(exc).__name__}: {one_line(exc)})") from exc
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
