"""`defectcam-predict`: where is the defect in *these* images? A trained experiment's localizer on new files.

    defectcam-predict paths.output_dir=outputs/quick data.problems=[1] predict.input=new/ predict.output=predicted/

The entry (method, layer or fusion, post-process, gate) is the protocol's choice by default: per problem, the
report summary's entry chosen on validation by `localize.select_on` under `predict.gate`, at its val-chosen
threshold; the classifier decides by the evaluate stage's rule (evaluate.decision), as the gate does in
localize. Per image it writes the mask (at the image's own size), an overlay, and one row of
predictions.csv / predictions.json. The whole output folder is built beside the target and renamed into place
at the end, so a stopped run leaves nothing half-written.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from defectcam.cams.normalize import scoring_maps
from defectcam.cams.storage import as_stored
from defectcam.data.images import resize_image
from defectcam.data.inputs import check_min_size, check_on_error, collect_inputs, read_input
from defectcam.data.prepare import problem_dir
from defectcam.errors import ConfigError, DatasetError, StageOrderError, StaleInputError
from defectcam.export import EXPORT_FORMAT, FILES as EXPORT_FILES, FOLDER as EXPORT_FOLDER
from defectcam.fullres.maps import probability_scoring_maps, stored_probabilities
from defectcam.io import read_json, temp_dir, write_json
from defectcam.localization.ellipse import analysis_maps, largest_component_ellipses
from defectcam.localization.entries import BASELINE_LAYER, Fusion, entry_scoring_maps, fusions_from
from defectcam.localization.entry_network import EntryNetwork, EntryParts, EntrySources, entry_parts, split_outputs
from defectcam.localization.products import gated_product, product_cam
from defectcam.models.loading import file_sha1, load_classifier
from defectcam.report.build import summary_table
from defectcam.stages.answer_strip import predicted_masks
from defectcam.stages.cams import target_class
from defectcam.stages.common import inference_device
from defectcam.stages.fullres import decoder_path, decoder_record, load_decoder
from defectcam.stages.localize import META_FILE as LOCALIZE_META, recorded_decoder_threshold
from defectcam.stages.settings import PREDICT_DEFAULTS, output_dir, problems_of, validate
from defectcam.stages.shell import stage_entry

if TYPE_CHECKING:
    from defectcam.export.runtime import OnnxLocalizer

log = logging.getLogger(__name__)
MIN_SIDE = 32  # ResNet's total stride: a smaller image carries less than one cell of the last stage
ELLIPSE_KEYS = ("ellipse_cx", "ellipse_cy", "ellipse_major", "ellipse_minor", "ellipse_angle_deg")


@dataclass(frozen=True)
class Entry:
    """What predict applies: a scored entry of localize, its val-chosen threshold and the gate."""

    method: str
    layer: str
    postprocess: str
    gate: str
    threshold: float
    decoder_threshold: float | None = None  # a fullres_x_<cam> entry: the product is emptied where the decoder stays below it


def predict_entry(cfg: DictConfig, folder: Path) -> Entry:
    """predict.entry (method/layer) or, when null, the summary's entry chosen on validation under predict.gate. Its
    callers (predict, export) have run validate(cfg), which checks predict.gate and predict.postprocess."""
    path = folder / "localization.csv"
    if not path.is_file():
        raise StageOrderError(f"{path}: missing; run the localize stage first (make localize)")
    rows = pd.read_csv(path)
    gate, select_on = predict_setting(cfg, "gate"), str(cfg.localize.select_on)  # both checked by validate()
    if cfg.predict.entry is None:
        summary = summary_table(rows)
        picked = summary[(summary["gate"] == gate) & (summary["chosen_by"] == select_on)]
        if picked.empty:
            raise StageOrderError(f"{path}: no entry scored under gate {gate!r}; rerun localize with it in localize.gates")
        row = picked.iloc[0]
        entry = Entry(str(row["method"]), str(row["layer"]), str(row["postprocess"]), gate, float(row["threshold"]))
        return with_product_gate(entry, rows, path)
    method, _, layer = str(cfg.predict.entry).partition("/")
    postprocess = predict_setting(cfg, "postprocess")
    val = rows[(rows["split"] == "val") & (rows["selection"] == "val-best") & (rows["layer"] != BASELINE_LAYER)]
    match = val[(val["method"] == method) & (val["layer"] == layer) & (val["gate"] == gate) & (val["postprocess"] == postprocess)]
    if match.empty:
        known = sorted({f"{m}/{lay}" for m, lay in zip(val["method"], val["layer"])})
        raise ConfigError(f"predict.entry: {cfg.predict.entry!r} with postprocess {postprocess!r} and gate {gate!r} was not "
                          f"scored by localize; scored entries: {', '.join(known)}")
    return with_product_gate(Entry(method, layer, postprocess, gate, float(match.iloc[0]["threshold"])), rows, path)


def with_product_gate(entry: Entry, rows: pd.DataFrame, path: Path) -> Entry:
    """A product entry carries the decoder threshold localize emptied its images below (recorded on its rows)."""
    if product_cam(entry.method) is None:
        return entry
    threshold = recorded_decoder_threshold(rows, entry.method, entry.layer)
    if threshold is None:
        raise StaleInputError(f"{path}: {entry.method}/{entry.layer} has no decoder_threshold recorded; rerun make localize")
    return replace(entry, decoder_threshold=threshold)


def ellipse_parameters(score_map: torch.Tensor, threshold: float) -> dict[str, float]:
    """Centre (x, y), semi-axes and angle (degrees, of the major axis from the x axis) of the moment ellipse the
    post-process draws for one (1, H, W) map; NaN where nothing passes the threshold."""
    size = (int(score_map.shape[1]), int(score_map.shape[2]))
    ellipses = largest_component_ellipses(analysis_maps(score_map) >= threshold, size)
    if not bool(ellipses.present[0]):
        return dict.fromkeys(ELLIPSE_KEYS, math.nan)
    values, vectors = torch.linalg.eigh(ellipses.covariance[0])
    major = vectors[:, 1]
    return {"ellipse_cx": float(ellipses.centre[0, 0]), "ellipse_cy": float(ellipses.centre[0, 1]),
            "ellipse_major": float(2 * values[1].sqrt()), "ellipse_minor": float(2 * values[0].sqrt()),
            "ellipse_angle_deg": float(torch.rad2deg(torch.atan2(major[1], major[0])) % 180.0)}


def unique_names(paths: list[Path]) -> list[str]:
    """A file-name stem per input, made unique with a counter where two inputs share one."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def scored_settings(folder: Path) -> tuple[dict[str, Any], float]:
    """The CAM settings localize scored with and the classifier's decision threshold its gate used, from
    localization_meta.json, after checking that they belong to the current best.ckpt (else one line naming the
    stage to rerun). Nothing here needs the training data."""
    meta_path, ckpt = folder / LOCALIZE_META, folder / "checkpoints" / "best.ckpt"
    for path, stage in ((ckpt, "train"), (meta_path, "localize")):
        if not path.is_file():
            raise StageOrderError(f"{path}: missing; run the {stage} stage first (make {stage})")
    meta = read_json(meta_path)
    if "decision_threshold" not in meta or meta.get("cams", {}).get("checkpoint_sha1") != file_sha1(ckpt):
        raise StaleInputError(f"{meta_path}: localization belongs to another best.ckpt or an older defectcam; rerun make localize")
    return meta["cams"], float(meta["decision_threshold"])


@dataclass
class Predictor:
    """An entry's network turned into per-image predictions: scoring map at the image's own size, logit margin,
    decision and mask (emptied where the gate rejects the image), built as localize scores them.

    `network` maps gray (N, 1, S, S) in [0, 1] to the entry's sources in `parts.output_names()` order: the
    EntryNetwork in PyTorch (localization/entry_network.py) or the same network exported (predict.backend=onnx).
    The sources become the entry's map here, per image size: a decoder's probabilities upsampled, raw CAMs
    upsampled and min-max normalized (fused for a fusion), a product's two maps multiplied and gated."""

    network: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    parts: EntryParts
    entry: Entry
    decision: float
    image_size: int
    fusions: dict[str, Fusion]
    device: torch.device = torch.device("cpu")

    def gray_input(self, images: list[np.ndarray]) -> torch.Tensor:
        """(H, W) uint8 images -> (N, 1, S, S) float in [0, 1], resized as training saw them (the network's input)."""
        # np.array: an image already at size comes back as the read-only array it was read into
        return torch.stack([torch.from_numpy(np.array(resize_image(g, self.image_size))).float().div(255.0)
                            for g in images]).unsqueeze(1)

    def maps(self, gray: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        """(N, 1, S, S) gray -> (logit margins (N,), per image a function size -> its (1, H, W) scoring map)."""
        outputs = [output.detach().float().cpu() for output in self.network(gray.to(self.device))]
        margins, probs, raw = split_outputs(self.parts, outputs)
        # Localize chose the threshold on the caches' rounded maps; rounded alike, a pixel within one float16 step of
        # it falls where localize put it unless kernel noise straddles a rounding midpoint (unrounded, 1 of 287 real
        # masks differed, IoU 0.997; rounded, none).
        probs = None if probs is None else stored_probabilities(probs).float()
        raw = {layer: as_stored(maps) for layer, maps in raw.items()}
        return margins, [lambda size, j=j: self.scoring_map(probs, raw, j, size) for j in range(len(margins))]

    def scoring_map(self, probs: torch.Tensor | None, raw: dict[str, torch.Tensor], j: int, size: tuple[int, int]) -> torch.Tensor:
        """Image j's (1, H, W) scoring map at `size`, from the network's probabilities and raw CAMs."""
        if probs is None:  # a CAM entry or a fusion
            cams = {self.parts.cam_method: {layer: maps[j : j + 1] for layer, maps in raw.items()}}
            return entry_scoring_maps(cams, self.entry.method, self.entry.layer, self.fusions, size)
        decoder_map = probability_scoring_maps(probs[j : j + 1], size)
        if not raw:
            return decoder_map
        (cam,) = raw.values()
        threshold = float(self.entry.decoder_threshold)  # type: ignore[arg-type]  # set for every product entry
        return gated_product(decoder_map, scoring_maps(cam[j : j + 1], size), threshold)

    def __call__(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, float, bool]]:
        """(H, W) uint8 images -> per image (scoring map (H, W), mask (H, W) bool, logit margin, defect)."""
        margins, scoring = self.maps(self.gray_input(images))
        out = []
        for j, image in enumerate(images):
            score_map = scoring[j](image.shape)
            defect = bool(margins[j] > self.decision)
            mask = predicted_masks(score_map, self.entry.threshold, self.entry.postprocess)[0].cpu().numpy()
            if self.entry.gate == "classifier" and not defect:
                mask = np.zeros_like(mask)
            out.append((score_map[0].cpu().numpy(), mask, float(margins[j]), defect))
        return out


def configured_parts(cfg: DictConfig, entry: Entry) -> tuple[EntryParts, dict[str, Fusion]]:
    """What the entry's map is made from, and the configured fusions by name."""
    fusions = {f.name: f for f in fusions_from(cfg.cam.fusions)}
    return entry_parts(entry.method, entry.layer, fusions), fusions


def sources_of(parts: EntryParts, entry: Entry, meta: dict[str, Any], record: dict[str, Any] | None,
               fusions: dict[str, Fusion]) -> EntrySources:
    """How the entry's sources were made when localize scored it: the CAM cache's target and TTA (`meta`), the stored
    decoder's TTA (`record`, None without a decoder), a fusion's mode."""
    fusion = fusions.get(entry.method)
    return EntrySources(parts, target_class(str(meta["target"])), str(meta.get("tta", "none")),
                        "none" if record is None else str(record["tta"]), fusion.mode if fusion is not None else None)


def scored_sources(cfg: DictConfig, folder: Path, entry: Entry, meta: dict[str, Any]) -> tuple[EntrySources, dict[str, Fusion]]:
    """The entry's sources as localize scored them (the decoder file checked) and the configured fusions, without
    loading any network."""
    parts, fusions = configured_parts(cfg, entry)
    record = None if parts.decoder is None else decoder_record(folder, parts.decoder)
    return sources_of(parts, entry, meta, record, fusions), fusions


def entry_network(cfg: DictConfig, folder: Path, entry: Entry, meta: dict[str, Any]) -> tuple[EntryNetwork, EntrySources, dict[str, Fusion]]:
    """The entry's network over a problem folder's best.ckpt, on the CPU (move it after), how its sources are made,
    and the configured fusions (by name). The network sees images as localize's maps were made: the CAMs as the
    cache was made (`meta`: its target and TTA), the decoder the fullres stage stored, with its own TTA."""
    parts, fusions = configured_parts(cfg, entry)
    module = load_classifier(folder / "checkpoints" / "best.ckpt").eval()
    decoder, record = (None, None) if parts.decoder is None else load_decoder(folder, parts.decoder, module.net)
    sources = sources_of(parts, entry, meta, record, fusions)
    normalization = (float(module.hparams.normalization[0]), float(module.hparams.normalization[1]))
    network = EntryNetwork.from_sources(module.net, normalization, sources, decoder)
    return network, sources, fusions


def predict_setting(cfg: DictConfig, name: str) -> str:
    """predict.<name> (gate, postprocess, backend), its default (PREDICT_DEFAULTS) when left unset."""
    value = cfg.predict[name]
    return PREDICT_DEFAULTS[name] if value is None else str(value)


def localizer_identity(folder: Path, entry: Entry, decision: float, sources: EntrySources, image_size: int) -> dict[str, Any]:
    """What an exported localizer of `folder` must have been made from to stand for `entry`: the export layout, the
    entry and its thresholds, the gate's decision threshold, the input size, the SHA-1 of best.ckpt, and what the
    graph computes: the decoder (its file's SHA-1, its TTA), the CAMs (method, layers, target, TTA, fusion mode)."""
    identity: dict[str, Any] = {
        "export_format": EXPORT_FORMAT, "method": entry.method, "layer": entry.layer, "postprocess": entry.postprocess,
        "gate": entry.gate, "threshold": entry.threshold, "decision_threshold": decision, "image_size": image_size,
        "checkpoint_sha1": file_sha1(folder / "checkpoints" / "best.ckpt")}
    parts = sources.parts
    if parts.decoder is not None:
        identity.update(decoder_sha1=file_sha1(decoder_path(folder, parts.decoder)), tta=sources.decoder_tta)
    if entry.decoder_threshold is not None:
        identity["decoder_threshold"] = entry.decoder_threshold
    if parts.cam_method is not None:
        identity.update(cam_method=parts.cam_method, cam_layers=list(parts.cam_layers), cam_target=sources.target,
                        cam_tta=sources.cam_tta)
    if sources.fusion_mode is not None:
        identity["fusion_mode"] = sources.fusion_mode
    return identity


def exported_localizer(folder: Path, entry: Entry, decision: float, sources: EntrySources, image_size: int) -> OnnxLocalizer:
    """predict.backend=onnx: the problem's localizer.onnx in onnxruntime, once it is known to be this entry's."""
    path = folder / EXPORT_FOLDER / EXPORT_FILES["onnx"]
    if not path.is_file():
        raise StageOrderError(f"{path}: missing; export it first (make export) with the same predict.entry/gate/postprocess")
    from defectcam.export.runtime import load_onnx_localizer  # onnxruntime is an optional extra

    return load_onnx_localizer(path, localizer_identity(folder, entry, decision, sources, image_size),
                               sources.parts.output_names())


def problem_predictor(cfg: DictConfig, problem: int) -> Predictor:
    """One problem's localizer as predict applies it: the entry, its thresholds and the classifier's decision from
    the run's files, on PyTorch or (predict.backend=onnx) on the problem's exported localizer.onnx."""
    folder = problem_dir(output_dir(cfg), problem)
    entry = predict_entry(cfg, folder)
    meta, decision = scored_settings(folder)
    size = int(meta["image_size"])
    if predict_setting(cfg, "backend") == "onnx":  # normalization, TTA and the CAMs' backward pass are inside the exported graph
        sources, fusions = scored_sources(cfg, folder, entry, meta)  # what the file must hold; no network is loaded
        exported = exported_localizer(folder, entry, decision, sources, size)
        log.info("problem %d: backend onnx, %s", problem, exported.path)
        return Predictor(exported, sources.parts, entry, decision, size, fusions)
    device = inference_device(cfg)
    network, sources, fusions = entry_network(cfg, folder, entry, meta)
    return Predictor(network.to(device), sources.parts, entry, decision, size, fusions, device)


def predict_problem(cfg: DictConfig, problem: int, paths: list[Path], work: Path,
                    predictor: Predictor | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for every readable input of one problem's localizer (the run's, or `predictor`), written under `work`,
    and the errors of the others."""
    return predict_images(cfg, problem_predictor(cfg, problem) if predictor is None else predictor, problem, paths, work)


def predict_images(cfg: DictConfig, predictor: Predictor, problem: int, paths: list[Path], work: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for every readable input (written under `work`) and the errors of the others."""
    entry, decision = predictor.entry, predictor.decision
    batch, stop = int(cfg.predict.batch_size), check_on_error(cfg.predict.on_error) == "stop"
    log.info("problem %d: %s %s (post-process %s, gate %s) at threshold %.4g; classifier: margin > %.4g",
             problem, entry.method, entry.layer, entry.postprocess, entry.gate, entry.threshold, decision)
    rows, errors = [], []
    names = unique_names(paths)
    for start in tqdm(range(0, len(paths), batch), desc=f"predict problem {problem}", disable=None):
        images, kept = [], []
        for i in range(start, min(start + batch, len(paths))):
            try:
                gray, note = read_input(paths[i])
                check_min_size(paths[i], gray.shape, MIN_SIDE)
            except DatasetError as exc:
                if stop:
                    raise
                errors.append(str(exc))
                log.warning("skipped: %s", exc)
                continue
            if note:
                log.info("%s: converted %s", paths[i], note)
            images.append(gray)
            kept.append(i)
        if not images:
            continue
        for (heat, mask, margin, defect), i, image in zip(predictor(images), kept, images):
            row = write_outputs(work, names[i], paths[i], image, heat, mask, margin, defect, entry, problem, decision)
            if entry.postprocess == "ellipse":
                row.update(ellipse_parameters(torch.from_numpy(heat)[None], entry.threshold) if mask.any() else dict.fromkeys(ELLIPSE_KEYS, math.nan))
            rows.append(row)
    return rows, errors


def write_outputs(work: Path, name: str, source: Path, image: np.ndarray, heat: np.ndarray, mask: np.ndarray, margin: float,
                  defect: bool, entry: Entry, problem: int, decision: float) -> dict[str, Any]:
    """The mask and overlay PNGs of one image under `work`, and its row."""
    from defectcam.report.figures import overlay_rgb  # matplotlib's colour map: not at start-up, where errors are

    mask_rel, overlay_rel = Path("masks") / f"{name}_mask.png", Path("overlays") / f"{name}_overlay.png"
    for rel, array in ((mask_rel, (mask * 255).astype(np.uint8)), (overlay_rel, overlay_rgb(image, heat, mask))):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(work / rel)
    return {"image": str(source), "problem": problem, "logit_margin": margin, "p_defect": float(torch.sigmoid(torch.tensor(margin))),
            "defect": int(defect), "decision_threshold": decision, "mask": mask_rel.as_posix(), "overlay": overlay_rel.as_posix(),
            "mask_pixels": int(mask.sum()), "method": entry.method, "layer": entry.layer, "threshold": entry.threshold,
            "gate": entry.gate, "postprocess": entry.postprocess}


def run_predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every input with each configured problem's model into predict.output (one sub-folder per problem
    when there are several); returns the counts of images done and skipped."""
    validate(cfg)
    if cfg.predict.input is None or cfg.predict.output is None:
        raise ConfigError("predict.input and predict.output must both be set (predict.input=<folder|glob|file> predict.output=<folder>)")
    check_on_error(cfg.predict.on_error)
    target = Path(str(cfg.predict.output)).expanduser().resolve()
    if target.exists() and not cfg.predict.force:
        raise ConfigError(f"{target}: already exists; pass predict.force=true to replace it, or another predict.output")
    standalone = None
    if cfg.predict.model is not None:  # an exported file alone: its own problem, entry and thresholds
        from defectcam.stages.predict_model import model_predictor

        standalone = model_predictor(cfg)
    paths = collect_inputs(str(cfg.predict.input))
    problems = [standalone[0]] if standalone else problems_of(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = temp_dir(target.parent, prefix=f".{target.name}.partial-")  # renamed into place: a plain mkdir's permissions
    try:
        done, errors = 0, []
        for problem in problems:
            folder = work if len(problems) == 1 else work / f"problem_{problem}"
            rows, failed = predict_problem(cfg, problem, paths, folder, standalone[1] if standalone else None)
            errors += failed
            if not rows:
                raise DatasetError(f"{cfg.predict.input}: no image could be read ({len(failed)} failed; first: {failed[0]})")
            pd.DataFrame(rows).to_csv(folder / "predictions.csv", index=False, float_format="%.9g")
            write_json(folder / "predictions.json", rows)
            done += len(rows)
        if target.exists():  # predict.force: the old folder goes only once the new one is complete
            shutil.rmtree(target)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    skipped = len(set(errors))
    log.info("predict: %d image(s) done, %d skipped%s; results in %s", done, skipped,
             f" (first: {errors[0]})" if errors else "", target)
    print(f"defectcam-predict: {done} prediction(s) written to {target}, {skipped} input(s) skipped")
    return {"done": done, "skipped": skipped}


main = stage_entry("predict", run_predict)
