"""Does predict give what localize scored? Its masks and decisions on a part's images against the cached maps.

Used by tests/test_predict.py on the tiny pipeline and by scripts/check_predict.py on a real run: for the entry
predict applied (read from its predictions.csv), localize's own scoring maps of the cached test part at that
entry's threshold, post-process and gate, against the mask PNGs predict wrote for the same image files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from PIL import Image

from defectcam.data.prepare import ProblemData
from defectcam.stages.answer_strip import predicted_masks
from defectcam.stages.cams import load_cam_cache
from defectcam.stages.localize import entries_for, probability_maps, recorded_decoder_threshold


def localize_maps(cfg: DictConfig, data: ProblemData, folder: Path, part: str, method: str, layer: str,
                  cache: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> torch.Tensor:
    """One entry's scoring maps of a part as localize builds them from the caches (`cache`: the part's CAM cache,
    `meta`: localization_meta.json, when the caller has read them), a product gated at the decoder threshold its
    localization.csv rows record."""
    meta = json.loads((folder / "localization_meta.json").read_text()) if meta is None else meta
    cache = load_cam_cache(folder)[part] if cache is None else cache
    probabilities = probability_maps(folder, meta, part, cache["rows"], torch.device("cpu"))
    decoder_threshold = recorded_decoder_threshold(pd.read_csv(folder / "localization.csv"), method, layer)
    scored = entries_for(cfg, cache["maps"], data.native_size, probabilities, decoder_threshold)
    maps = next((m for scored_method, scored_layer, m in scored if (scored_method, scored_layer) == (method, layer)), None)
    if maps is None:
        raise ValueError(f"{method}/{layer}: not among the entries localize scores with this config")
    return maps


def compare_with_localize(cfg: DictConfig, data: ProblemData, folder: Path, predicted: Path, part: str = "test") -> dict[str, Any]:
    """Per image of `part` that predict wrote a row for: the IoU of predict's mask with localize's (1 when both are
    empty), and whether the decisions and logit margins agree. Returns the per-image frame and its summary."""
    rows = pd.read_csv(predicted / "predictions.csv")
    entry = rows.iloc[0]
    meta = json.loads((folder / "localization_meta.json").read_text())
    cache = load_cam_cache(folder)[part]
    maps = localize_maps(cfg, data, folder, part, str(entry["method"]), str(entry["layer"]), cache, meta)
    expected = predicted_masks(maps, float(entry["threshold"]), str(entry["postprocess"])).numpy()
    decision = float(meta["decision_threshold"])
    keep = (cache["logit_margin"] > decision).numpy()
    if entry["gate"] == "classifier":
        expected[~keep] = False
    by_name = {Path(p).name: i for i, p in enumerate(rows["image"])}
    images = []
    for k, row_index in enumerate(cache["rows"].numpy()):
        name = Path(data.table["image_path"].iat[int(row_index)]).name
        if name not in by_name:
            continue
        row = rows.iloc[by_name[name]]
        got = np.asarray(Image.open(predicted / row["mask"])) > 0
        union = (got | expected[k]).sum()
        images.append({"image": name, "iou": 1.0 if union == 0 else float((got & expected[k]).sum() / union),
                       "same_decision": bool(row["defect"] == int(keep[k])),
                       "margin_difference": abs(float(row["logit_margin"]) - float(cache["logit_margin"][k])),
                       "shape_ok": got.shape == expected[k].shape})
    frame = pd.DataFrame(images)
    return {"images": frame, "n": len(frame), "min_iou": float(frame["iou"].min()), "mean_iou": float(frame["iou"].mean()),
            "same_decisions": int(frame["same_decision"].sum()), "max_margin_difference": float(frame["margin_difference"].max()),
            "entry": f"{entry['method']}/{entry['layer']} ({entry['postprocess']}, gate {entry['gate']}, threshold {entry['threshold']:.4g})"}
