"""`defectcam-localize`: threshold CAMs into masks and score them; the threshold is chosen on val, reported on test."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.errors import ConfigError
from defectcam.io import atomic_path, read_json, write_json
from defectcam.localization import default_thresholds, evaluate_localization, split_curves
from defectcam.localization.entries import fusions_from, masks_tensor, scored_entries
from defectcam.report.figures import save_figure, threshold_curves
from defectcam.stages.cams import META_NAME, load_cam_cache
from defectcam.stages.data import prepare_data
from defectcam.stages.settings import output_dir
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)
SWEEP_SCORES = ("miou", "dataset_iou", "two_class_miou", "false_alarm")


def part_maps(cache: dict[str, Any], part: str, data: ProblemData) -> tuple[dict[str, dict[str, torch.Tensor]], torch.Tensor]:
    """Raw maps and (N, S, S) bool masks of one cached part, in cache order."""
    if part not in cache:
        raise ConfigError(f"cam.parts: the CAM cache holds no {part!r} part; localization needs val and test")
    rows = cache[part]["rows"].tolist()
    return cache[part]["maps"], masks_tensor([data.mask_of(row) for row in rows])


def entries_for(cfg: DictConfig, maps: dict[str, dict[str, torch.Tensor]], size: tuple[int, int]):
    """The scored entries of one part as the localize config selects them."""
    select = lambda key: None if cfg.localize[key] is None else [str(v) for v in cfg.localize[key]]  # noqa: E731
    return scored_entries(
        maps, size, select("methods"), select("layers"), fusions_from(cfg.cam.fusions), list(cfg.localize.baselines), int(cfg.seed)
    )


def localize_problem(cfg: DictConfig, data: ProblemData) -> pd.DataFrame:
    """The protocol for every entry of one problem: localization.csv and curves.csv (skipped when up to date)."""
    out = problem_dir(output_dir(cfg), data.problem)
    meta = {"cams": read_json(out / "cams" / META_NAME) if (out / "cams" / META_NAME).is_file() else None,
            "localize": OmegaConf.to_container(cfg.localize), "fusions": OmegaConf.to_container(cfg.cam.fusions)}
    result_csv, meta_path = out / "localization.csv", out / "localization_meta.json"
    if result_csv.is_file() and meta_path.is_file() and read_json(meta_path) == meta and not cfg.localize.force:
        return pd.read_csv(result_csv)
    cache = load_cam_cache(out)
    size = (int(cfg.data.image_size),) * 2
    (val_raw, val_masks), (test_raw, test_masks) = part_maps(cache, "val", data), part_maps(cache, "test", data)
    grid = default_thresholds(int(cfg.localize.n_thresholds))
    rows, curves = [], []
    val_entries, test_entries = entries_for(cfg, val_raw, size), entries_for(cfg, test_raw, size)
    for (method, layer, val_maps), (_, _, test_maps) in zip(val_entries, test_entries):
        result = evaluate_localization(val_maps, val_masks, test_maps, test_masks, grid, list(cfg.localize.fixed_thresholds))
        key = {"problem": data.problem, "method": method, "layer": layer}
        rows += [{**key, **row} for row in result.rows]
        curves += [{**key, **row} for row in result.curves]
    table, curve_table = pd.DataFrame(rows), pd.DataFrame(curves)
    for path, frame in ((result_csv, table), (out / "curves.csv", curve_table)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    write_json(meta_path, meta)
    val_curves = curve_table[curve_table["split"] == "val"]
    save_figure(threshold_curves(val_curves, f"problem {data.problem}: validation mIoU against threshold"), out / "figures" / "threshold_curves.png")
    chosen = table[table["selection"] == "val-best"]
    best = chosen[chosen["split"] == "val"].sort_values("miou", ascending=False).iloc[0]  # ranked on validation
    test_miou = chosen[(chosen["split"] == "test") & (chosen["method"] == best["method"]) & (chosen["layer"] == best["layer"])]["miou"].iloc[0]
    log.info("problem %d: best on validation %s %s (threshold %.2f): val mIoU %.3f, test mIoU %.3f",
             data.problem, best["method"], best["layer"], best["threshold"], best["miou"], test_miou)
    return table


def sweep_job(cfg: DictConfig, data: ProblemData, threshold: float) -> list[dict[str, Any]]:
    """One job of a threshold sweep: one row per entry with its val and test scores at one fixed threshold."""
    cache = load_cam_cache(problem_dir(output_dir(cfg), data.problem))
    size = (int(cfg.data.image_size),) * 2
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for part in ("val", "test"):
        raw, masks = part_maps(cache, part, data)
        for method, layer, maps in entries_for(cfg, raw, size):
            curves = split_curves(maps, masks, torch.tensor([threshold], dtype=torch.float64), part)
            row = rows.setdefault((method, layer), {"problem": data.problem, "method": method, "layer": layer, "threshold": threshold})
            for score in SWEEP_SCORES:
                row[f"{part}_{score}"] = float(getattr(curves, score)[0])
    return list(rows.values())


def run_localize(cfg: DictConfig, job_dir: Path | None = None) -> float:
    """The localize stage. Returns the mean validation mIoU (what a sweeper may optimize; never test)."""
    prepared = prepare_data(cfg)
    if cfg.localize.threshold is None:
        tables = [localize_problem(cfg, data) for data in prepared.values()]
        val = pd.concat(tables).query("split == 'val' and selection == 'val-best'")
        return float(val["miou"].mean())
    threshold = float(cfg.localize.threshold)
    rows = [row for data in prepared.values() for row in sweep_job(cfg, data, threshold)]
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
