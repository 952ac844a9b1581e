"""`defectcam-localize`: threshold CAMs into masks and score them at the masks' native resolution.

Every threshold is chosen on validation (per gate and post-process), reported on test with 95 %
bootstrap intervals; see localization/protocol.py and docs/localization.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.errors import ConfigError, StaleInputError
from defectcam.evaluation.classification import predict
from defectcam.evaluation.decision import decision_rule
from defectcam.fullres import REFERENCE_METHODS
from defectcam.io import atomic_path, read_json, write_json
from defectcam.localization import Part, Protocol, evaluate_entry
from defectcam.localization.entries import fusions_from, masks_tensor, scored_entries
from defectcam.localization.products import (
    decoder_gate_threshold,
    product_cam,
    product_entries,
    product_method,
    weak_decoder_maps,
)
from defectcam.localization.protocol import scores_at
from defectcam.stages.answer_strip import chosen_entry, draw_answer_strip, strip_maps
from defectcam.stages.cams import fresh_cams, load_cam_cache
from defectcam.stages.common import inference_device, require_all_trained
from defectcam.stages.evaluate import fresh_metrics
from defectcam.stages.fullres import fresh_fullres, load_fullres_cache
from defectcam.stages.data import prepare_data
from defectcam.stages.settings import output_dir, to_plain
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)
SWEEP_SCORES = ("miou", "all_miou", "dataset_iou", "two_class_miou", "false_alarm", "image_false_alarm")
LOCALIZE_FORMAT = 3  # 3: + figures/answer_strip.png; 2: native-resolution masks, gates, post-processes, intervals
RESULT_FILES = ("localization.csv", "curves.csv", "localization_images.csv")
META_FILE = "localization_meta.json"


def protocol_of(cfg: DictConfig) -> Protocol:
    """The protocol's settings from cfg.localize."""
    return Protocol(
        gates=tuple(str(g) for g in cfg.localize.gates),
        postprocesses=tuple(str(p) for p in cfg.localize.postprocess),
        select_on=str(cfg.localize.select_on),
        n_thresholds=int(cfg.localize.n_thresholds),
        fixed_thresholds=tuple(float(t) for t in cfg.localize.fixed_thresholds),
        bootstrap=int(cfg.localize.bootstrap),
        seed=int(cfg.seed),
    )


def localize_meta(cfg: DictConfig, cams: dict[str, Any], decision_threshold: float, fullres: dict[str, Any] | None) -> dict[str, Any]:
    """What a problem's localization files depend on: its CAM cache, its fullres cache (None: no decoder), the
    localize settings and the classifier's decision threshold (the gate's)."""
    return {"format": LOCALIZE_FORMAT, "cams": cams, "localize": to_plain(cfg.localize), "fusions": to_plain(cfg.cam.fusions) or {},
            "seed": int(cfg.seed), "decision": decision_rule(cfg.evaluate.decision), "decision_threshold": float(decision_threshold),
            **({"fullres": fullres} if fullres is not None else {})}


def fresh_localize_meta(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """localize_meta of the inputs as they are now, each refreshed first when stale. One source for the decision:
    the evaluate stage's metrics.json, so the gate decides at exactly the threshold the classification scores use."""
    return localize_meta(cfg, fresh_cams(cfg, data), fresh_metrics(cfg, data)["decision_threshold"], fresh_fullres(cfg, data))


def probability_maps(folder: Path, meta: dict[str, Any], part: str, rows: torch.Tensor, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """The decoders' probability maps of one part ({} without a fullres cache), in the CAM cache's row order."""
    if "fullres" not in meta:
        return {}
    cached = load_fullres_cache(folder)[part]
    if not torch.equal(cached["rows"], rows):
        raise StaleInputError(f"{folder / 'fullres'}: its {part} rows differ from the CAM cache's; rerun make fullres")
    return {m: {layer: maps.to(device) for layer, maps in per.items()} for m, per in cached["maps"].items()}


def parts_of(cache: dict[str, Any], part: str, data: ProblemData, device: torch.device,
             decision: float = 0.0) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Raw maps of one cached part and its native-size masks, labels and classifier decisions (margin > decision),
    in cache order, on device."""
    if part not in cache:
        raise ConfigError(f"cam.parts: the CAM cache holds no {part!r} part; localization needs val and test")
    rows = cache[part]["rows"].numpy()
    labels = torch.as_tensor(data.table["label"].to_numpy()[rows] == 1)
    truth = {"masks": masks_tensor([data.mask_of(int(row)) for row in rows]).to(device), "defective": labels.to(device),
             "predicted": predict(cache[part]["logit_margin"], decision).bool().to(device), "rows": torch.as_tensor(rows)}
    maps = {m: {layer: raw.to(device) for layer, raw in per.items()} for m, per in cache[part]["maps"].items()}
    return maps, truth


def entries_for(cfg: DictConfig, maps: dict[str, dict[str, torch.Tensor]], size: tuple[int, int],
                probabilities: dict[str, dict[str, torch.Tensor]] | None = None, decoder_threshold: float | None = None,
                only: tuple[str, str] | None = None) -> Iterator[tuple[str, str, torch.Tensor]]:
    """The scored entries of one part as the localize config selects them, as scoring maps of `size`; then, given
    the weak decoder's validation threshold (`decoder_threshold`, see decoder_threshold_of), its products with the
    CAMs. `only`: (method, layer) of one entry, so that no other entry's maps are built (the answer strip's)."""
    select = lambda key: None if cfg.localize[key] is None else [str(v) for v in cfg.localize[key]]  # noqa: E731
    # Only CAM layers and products read `layers`; fusions, decoders and baselines are selected by method alone.
    methods, layers = ([only[0]], [only[1]]) if only is not None else (select("methods"), select("layers"))
    yield from scored_entries(
        maps, size, methods, layers, fusions_from(cfg.cam.fusions), list(cfg.localize.baselines), int(cfg.seed), probabilities,
    )
    if decoder_threshold is None:
        return
    cams = [m for m in product_cams(cfg, maps) if methods is None or product_method(m) in methods]
    decoder = weak_decoder_maps(probabilities, size) if cams else None
    if decoder is not None:
        yield from product_entries(maps, decoder, size, cams, layers, decoder_threshold)


def product_cams(cfg: DictConfig, maps: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    """The CAM methods localize.fullres_products names (null: every cached one), once each, checked against the cache."""
    named = cfg.localize.fullres_products
    if named is None:
        return list(maps)
    for method in named:
        if str(method) not in maps:
            raise ConfigError(f"localize.fullres_products: {method!r} is not a cached CAM method (cached: {', '.join(maps)})")
    return list(dict.fromkeys(str(method) for method in named))


def decoder_threshold_of(cfg: DictConfig, val_probabilities: dict[str, dict[str, torch.Tensor]],
                         val_truth: dict[str, torch.Tensor], size: tuple[int, int]) -> float | None:
    """The weak decoder's own validation threshold, which gates its products; None when no product is asked for
    or there is no weak decoder."""
    if cfg.localize.fullres_products is not None and len(cfg.localize.fullres_products) == 0:
        return None
    decoder = weak_decoder_maps(val_probabilities, size)
    if decoder is None:
        return None
    return decoder_gate_threshold(decoder, val_truth["masks"], val_truth["defective"], str(cfg.localize.select_on))


def recorded_decoder_threshold(table: pd.DataFrame, method: str, layer: str) -> float | None:
    """The decoder threshold localize emptied a product entry's images below, from its rows of a localization.csv
    (column decoder_threshold); None when the table holds no such value for that entry."""
    if "decoder_threshold" not in table.columns:
        return None
    values = table[(table["method"] == method) & (table["layer"] == layer)]["decoder_threshold"].dropna()
    return None if values.empty else float(values.iloc[0])


def _part(maps: torch.Tensor, truth: dict[str, torch.Tensor]) -> Part:
    return Part(maps, truth["masks"], truth["defective"], truth["predicted"])


def localize_problem(cfg: DictConfig, data: ProblemData, meta: dict[str, Any]) -> pd.DataFrame:
    """The protocol for every entry of one problem: localization.csv, curves.csv and localization_images.csv
    (skipped when up to date with `meta`, fresh_localize_meta's record of the inputs)."""
    out = problem_dir(output_dir(cfg), data.problem)
    meta_path = out / META_FILE
    if all((out / name).is_file() for name in RESULT_FILES) and meta_path.is_file() and read_json(meta_path) == meta and not cfg.localize.force:
        return pd.read_csv(out / "localization.csv")
    cache, device = load_cam_cache(out), inference_device(cfg)  # on the GPU when the trainer uses one
    decision = float(meta["decision_threshold"])
    (val_raw, val_truth), (test_raw, test_truth) = (parts_of(cache, part, data, device, decision) for part in ("val", "test"))
    val_probs, test_probs = (probability_maps(out, meta, part, truth["rows"], device) for part, truth in (("val", val_truth), ("test", test_truth)))
    protocol = protocol_of(cfg)
    rows, curves, images = [], [], []
    test_ids = data.table["image_id"].to_numpy()[test_truth["rows"].numpy()]
    decoder_threshold = decoder_threshold_of(cfg, val_probs, val_truth, data.native_size)
    val_entries = entries_for(cfg, val_raw, data.native_size, val_probs, decoder_threshold)
    test_entries = entries_for(cfg, test_raw, data.native_size, test_probs, decoder_threshold)
    for (method, layer, val_maps), (_, _, test_maps) in zip(val_entries, test_entries):
        result = evaluate_entry(_part(val_maps, val_truth), _part(test_maps, test_truth), protocol)
        key = {"problem": data.problem, "method": method, "layer": layer}
        # a product records the decoder threshold it was emptied below, for predict to apply the same
        recorded = {"decoder_threshold": decoder_threshold} if product_cam(method) is not None else {}
        rows += [{**key, **row, **recorded} for row in result.rows]
        curves += [{**key, **row} for row in result.curves]
        images += [{**key, "image_id": test_ids[image.pop("index")], **image} for image in result.images]
    meta_path.unlink(missing_ok=True)  # results without their meta are never trusted
    tables = {"localization.csv": pd.DataFrame(rows), "curves.csv": pd.DataFrame(curves), "localization_images.csv": pd.DataFrame(images)}
    for name, frame in tables.items():
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    table, curve_table = tables["localization.csv"], tables["curves.csv"]
    plain = curve_table.query("split == 'val' and gate == 'none' and postprocess == 'none'")
    from defectcam.report.figures import save_figure, threshold_curves  # matplotlib: 0.8 s of start-up, only to draw

    save_figure(threshold_curves(plain, f"problem {data.problem}: validation scores against threshold (no gate, no post-process)"),
                out / "figures" / "threshold_curves.png")
    strip_entry = chosen_entry(table, tables["localization_images.csv"], protocol.select_on, test_ids)
    if strip_entry is not None:
        only = (strip_entry.method, strip_entry.layer)
        maps = strip_maps(entries_for(cfg, test_raw, data.native_size, test_probs, decoder_threshold, only), strip_entry)
        draw_answer_strip(data, strip_entry, maps, test_truth, out)
    write_json(meta_path, meta)  # last: the figures belong to the results it vouches for
    _log_best(data.problem, table, protocol.select_on)
    return table


def _log_best(problem: int, table: pd.DataFrame, select_on: str) -> None:
    """Log the entry ranked first on validation (never on test), per gate."""
    chosen = table[(table["selection"] == "val-best") & (table["layer"] != "-") & ~table["method"].isin(REFERENCE_METHODS)]
    for gate, group in chosen.groupby("gate", sort=False):
        val = group[(group["split"] == "val") & group[select_on].notna()]
        if val.empty:
            continue
        val = val.loc[val[select_on].idxmax()]  # the first in table order on ties, as the report picks
        test = group[(group["split"] == "test") & (group["method"] == val["method"]) & (group["layer"] == val["layer"])
                     & (group["postprocess"] == val["postprocess"])].iloc[0]
        log.info("problem %d, gate %s: best on validation %s %s (%s, threshold %.4g): test mIoU %.3f [%.3f, %.3f], "
                 "all-mIoU %.3f", problem, gate, val["method"], val["layer"], val["postprocess"], val["threshold"],
                 test["miou"], test["miou_ci_low"], test["miou_ci_high"], test["all_miou"])


def sweep_job(cfg: DictConfig, data: ProblemData, threshold: float, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One job of a threshold sweep: per entry, gate and post-process, val and test scores at one threshold."""
    folder = problem_dir(output_dir(cfg), data.problem)
    cache = load_cam_cache(folder)
    thresholds = torch.tensor([threshold], dtype=torch.float64)
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    decoder_threshold = None
    for part in ("val", "test"):  # val first: it decides the gate of the decoder's products
        raw, truth = parts_of(cache, part, data, inference_device(cfg), float(meta["decision_threshold"]))
        probs = probability_maps(folder, meta, part, truth["rows"], inference_device(cfg))
        if part == "val":
            decoder_threshold = decoder_threshold_of(cfg, probs, truth, data.native_size)
        for method, layer, maps in entries_for(cfg, raw, data.native_size, probs, decoder_threshold):
            for postprocess in cfg.localize.postprocess:
                per_gate = scores_at(_part(maps, truth), thresholds, str(postprocess), [str(g) for g in cfg.localize.gates])
                for gate, curves in per_gate.items():
                    key = (method, layer, str(gate), str(postprocess))
                    row = rows.setdefault(key, {"problem": data.problem, "method": method, "layer": layer, "gate": gate,
                                                "postprocess": postprocess, "threshold": threshold})
                    for score in SWEEP_SCORES:
                        row[f"{part}_{score}"] = float(getattr(curves, score)[0])
    return list(rows.values())


def run_localize(cfg: DictConfig, job_dir: Path | None = None) -> float:
    """The localize stage. Returns the mean validation mIoU (what a sweeper may optimize; never test)."""
    require_all_trained(cfg)
    prepared = prepare_data(cfg)
    # Stale CAMs or decoders are recomputed here, at torch's own thread count, not inside localize's
    # one thread (which would train a decoder on one core of two).
    metas = {problem: fresh_localize_meta(cfg, data) for problem, data in prepared.items()}
    with cpu_threads(cfg.localize.threads):
        return _localize(cfg, prepared, metas, job_dir)


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (None: unchanged) inside, restored after: a multirun runs its jobs in
    one process, and the next job's training must not inherit localize's single thread."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _localize(cfg: DictConfig, prepared: dict[int, ProblemData], metas: dict[int, dict[str, Any]], job_dir: Path | None) -> float:
    if cfg.localize.threshold is None:
        tables = [localize_problem(cfg, data, metas[problem]) for problem, data in prepared.items()]
        val = pd.concat(tables).query("split == 'val' and selection == 'val-best'")
        first = val[(val["gate"] == val["gate"].iloc[0]) & (val["postprocess"] == val["postprocess"].iloc[0])]
        return float(first["miou"].mean())
    threshold = float(cfg.localize.threshold)
    rows = [row for problem, data in prepared.items() for row in sweep_job(cfg, data, threshold, metas[problem])]
    frame = pd.DataFrame(rows)
    target = (job_dir or output_dir(cfg)) / "localization_job.csv"
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return float(frame["val_miou"].mean()) if len(frame) else math.nan


def _hydra_task(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.localize.threshold is None:
        # Each job would rewrite the protocol's localization.csv with its own subset.
        raise ConfigError("a localize multirun (-m) sweeps localize.threshold=...; run the protocol without -m")
    return run_localize(cfg, Path(hydra_cfg.runtime.output_dir))


main = stage_entry("localize", _hydra_task)
