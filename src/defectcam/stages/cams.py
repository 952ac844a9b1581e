"""`defectcam-cams`: raw CAMs of every method and layer for the val and test parts, cached losslessly enough, plus figures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from defectcam.cams import scoring_maps
from defectcam.cams.tta import tta_cams
from defectcam.cams.storage import decode_maps, encode_maps
from defectcam.data.prepare import ProblemData, ids_hash, problem_dir
from defectcam.errors import StageOrderError, StaleInputError
from defectcam.io import atomic_path, read_json, write_json
from defectcam.models.loading import file_sha1
from defectcam.stages.common import best_checkpoint, inference_device, require_all_trained, trained_problem
from defectcam.stages.data import prepare_data
from defectcam.stages.settings import output_dir, setting_change
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)
CACHE_NAME, META_NAME = "cams.pt", "cams_meta.json"
CACHE_FORMAT = 3  # 3: + logit margins; 2: per-map float16 codes of the map's own range (1: plain float16)


def cam_meta(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """What a cache depends on: the checkpoint's bytes, the CAM settings and the images."""
    ckpt = best_checkpoint(cfg, data.problem)
    if not ckpt.is_file():
        raise StageOrderError(f"{ckpt}: no checkpoint; run the train stage first (make train / defectcam-train)")
    return {
        "format": CACHE_FORMAT,
        "checkpoint_sha1": file_sha1(ckpt),
        "methods": list(cfg.cam.methods),
        "layers": list(cfg.cam.layers),
        "target": str(cfg.cam.target),
        # Only when on: caches made before cam.tta existed are caches without TTA, and stay valid.
        **({"tta": str(cfg.cam.tta)} if str(cfg.cam.tta) != "none" else {}),
        "parts": list(cfg.cam.parts),
        "image_size": int(cfg.data.image_size),
        "image_ids_sha1": ids_hash(data.table),
    }


def load_cam_cache(out: Path) -> dict[str, Any]:
    """The cache the cams stage wrote for a problem folder, raw maps decoded to float32."""
    path = out / "cams" / CACHE_NAME
    if not path.is_file():
        raise StageOrderError(f"{path}: no CAM cache; run the cams stage first (make cams / defectcam-cams)")
    cache = torch.load(path, map_location="cpu", weights_only=True)
    for part in cache.values():
        if isinstance(part, dict) and "maps" in part:
            part["maps"] = {m: {layer: decode_maps(stored) for layer, stored in per.items()} for m, per in part["maps"].items()}
    return cache


def stale_reason(recorded: dict[str, Any] | None, wanted: dict[str, Any], made: str = "the CAMs were computed") -> str | None:
    """Why a recorded meta does not describe what is wanted now (None when it does); `made`: when the cache was made."""
    if recorded is None:
        return "its meta file is missing"
    # Both sides' keys: a cache made with cam.tta=flips records a tta that a tta=none meta leaves out (cam_meta),
    # and comparing only the wanted keys once passed flipped CAMs off as fresh for tta=none.
    change = setting_change(recorded, wanted, {"tta": "none"})
    if change is None:
        return None
    if change[0] == "checkpoint_sha1":
        return f"best.ckpt changed since {made} (retrained?)"
    return change[1]


def refuse_or_warn(cfg: DictConfig, cache_path: Path, reason: str, stage: str, warning: str) -> None:
    """A stale cache under on_stale=error: one line naming it and the stage that refreshes it; else the warning."""
    if cfg.on_stale == "error":
        raise StaleInputError(f"{cache_path}: stale ({reason}); refresh it with `defectcam-{stage}` (make {stage}), or pass on_stale=recompute")
    log.warning("%s", warning)


def fresh_cams(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """The meta of a CAM cache that belongs to the current best.ckpt and CAM settings.

    A stale or missing cache is recomputed (on_stale=recompute, the default) or refused with one line
    naming it and the command that refreshes it (on_stale=error).
    """
    out = problem_dir(output_dir(cfg), data.problem)
    wanted = cam_meta(cfg, data)
    meta_path, cache_path = out / "cams" / META_NAME, out / "cams" / CACHE_NAME
    recorded = read_json(meta_path) if meta_path.is_file() else None
    reason = stale_reason(recorded, wanted) if cache_path.is_file() else "there is no CAM cache"
    if reason is None:
        return wanted
    refuse_or_warn(cfg, cache_path, reason, "cams", f"problem {data.problem}: CAM cache stale ({reason}); recomputing")
    return cams_problem(cfg, data)


def target_class(target: str) -> int | str:
    """cam.target as the CAM code takes it: 'defect' -> class 1, 'predicted' -> each image's predicted class."""
    return 1 if target == "defect" else "predicted"


def compute_part(cfg: DictConfig, module: torch.nn.Module, loader: Any, device: torch.device, desc: str) -> dict[str, Any]:
    """Encoded raw maps[method][layer] (N, h, w; see cams/storage.py), rows, p_defect and logit margins of one part."""
    target = target_class(str(cfg.cam.target))
    rows, p_defect, margins = [], [], []
    maps: dict[str, dict[str, list[torch.Tensor]]] = {m: {layer: [] for layer in cfg.cam.layers} for m in cfg.cam.methods}
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):  # None: no bar when not a terminal
        result = tta_cams(module.net, batch["image"].to(device), list(cfg.cam.layers), list(cfg.cam.methods), target,
                          str(cfg.cam.tta))
        rows.append(batch["row"])
        logits = result.logits.float().cpu()
        p_defect.append(logits.softmax(1)[:, 1])
        margins.append(logits[:, 1] - logits[:, 0])  # the classifier's decision (and the gate's) without saturation
        for method, per_layer in result.maps.items():
            for layer, raw in per_layer.items():
                maps[method][layer].append(raw.detach().float().cpu())
    return {
        "rows": torch.cat(rows),
        "p_defect": torch.cat(p_defect),
        "logit_margin": torch.cat(margins),
        "maps": {m: {layer: encode_maps(torch.cat(chunks)) for layer, chunks in per.items()} for m, per in maps.items()},
    }


def cams_problem(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """Compute (or reuse) a problem's CAM cache and draw its figures."""
    out = problem_dir(output_dir(cfg), data.problem)
    meta = cam_meta(cfg, data)
    meta_path = out / "cams" / META_NAME
    if meta_path.is_file() and (out / "cams" / CACHE_NAME).is_file() and read_json(meta_path) == meta and not cfg.cam.force:
        log.info("problem %d: CAM cache up to date", data.problem)
        return meta
    device = inference_device(cfg)
    module, datamodule = trained_problem(cfg, data, device)
    cache = {"meta": meta}
    with torch.enable_grad():  # CAMs need gradients, whatever the caller's mode
        for part in cfg.cam.parts:
            loader = datamodule.loader(part, int(cfg.cam.batch_size))
            cache[part] = compute_part(cfg, module, loader, device, f"CAMs problem {data.problem} {part}")
    meta_path.unlink(missing_ok=True)  # a cache without its meta is never trusted
    with atomic_path(out / "cams" / CACHE_NAME) as tmp:
        torch.save(cache, tmp)
    write_json(meta_path, meta)
    if "test" in cache:
        draw_figures(cfg, data, cache["test"], out)
    return meta


def draw_figures(cfg: DictConfig, data: ProblemData, part: dict[str, Any], out: Path) -> None:
    """One grid per method: a few defective test images, input | ground truth | each layer; also to TensorBoard."""
    # TensorBoard and matplotlib: about 0.9 s of every start-up, needed only to draw
    from torch.utils.tensorboard import SummaryWriter

    from defectcam.report.figures import cam_grid, figure_array, save_figure

    rows = part["rows"].numpy()
    picks = [i for i, row in enumerate(rows) if data.table["label"].iat[row] == 1][: int(cfg.cam.figure_images)]
    if not picks:
        return
    size = data.native_size  # maps are drawn where they are scored: at the masks' native size
    images = np.stack([np.asarray(data.images[rows[i]]) for i in picks])
    masks = np.stack([data.mask_of(int(rows[i])) for i in picks])
    ids = [str(data.table["image_id"].iat[rows[i]]) for i in picks]
    writer = SummaryWriter(str(out / "tensorboard"))
    try:
        for method, per_layer in part["maps"].items():
            layer_maps = {layer: scoring_maps(decode_maps(stored)[picks], size).numpy() for layer, stored in per_layer.items()}
            fig = cam_grid(images, masks, layer_maps, f"problem {data.problem}: {method} (defect class)", ids)
            writer.add_image(f"cams/{method}", figure_array(fig), dataformats="HWC")
            save_figure(fig, out / "figures" / f"cams_{method}.png")
    finally:
        writer.close()


def run_cams(cfg: DictConfig) -> None:
    """The cams stage over every problem."""
    require_all_trained(cfg)
    for data in prepare_data(cfg).values():
        cams_problem(cfg, data)


main = stage_entry("cams", run_cams)
