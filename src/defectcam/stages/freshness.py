"""Inputs of the report that belong to the current checkpoint and settings, or a clear refusal.

Every stage can be rerun alone, so the report must not print tables made from an older model or
other settings. With on_stale=recompute (the default, as `make reproduce` expects) the stages that
made a stale or missing input rerun for that problem; with on_stale=error the first stale input is
named with the command that refreshes it.
"""

from __future__ import annotations

from omegaconf import DictConfig

from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.errors import StaleInputError
from defectcam.io import read_json
from defectcam.stages.cams import CACHE_NAME, META_NAME, cam_meta, stale_reason
from defectcam.stages.common import require_all_trained
from defectcam.stages.data import prepare_data
from defectcam.stages.evaluate import stale_metrics
from defectcam.stages.fullres import stale_fullres
from defectcam.stages.localize import META_FILE, RESULT_FILES, fresh_localize_meta, localize_meta, localize_problem
from defectcam.stages.settings import output_dir


def stale_input(cfg: DictConfig, data: ProblemData) -> tuple[str, str] | None:
    """(file, what is wrong and the command that refreshes it) for the first stale input of a problem, or None."""
    out = problem_dir(output_dir(cfg), data.problem)
    metrics = out / "metrics.json"
    stale = stale_metrics(cfg, data.problem)
    if stale:
        return stale
    cams = cam_meta(cfg, data)
    recorded = read_json(out / "cams" / META_NAME) if (out / "cams" / META_NAME).is_file() else None
    reason = stale_reason(recorded, cams) if (out / "cams" / CACHE_NAME).is_file() else "there is no CAM cache"
    if reason:
        return str(out / "cams" / CACHE_NAME), f"stale ({reason}); run `defectcam-cams` (make cams)"
    fullres, fullres_cache, reason = stale_fullres(cfg, data)
    if reason:
        return str(fullres_cache), f"stale ({reason}); run `defectcam-fullres` (make fullres)"
    meta = out / META_FILE
    missing = [name for name in RESULT_FILES if not (out / name).is_file()]
    if missing or not meta.is_file() or read_json(meta) != localize_meta(cfg, cams, read_json(metrics)["decision_threshold"], fullres):
        return str(out / "localization.csv"), "made from other CAMs or localize settings; run `defectcam-localize` (make localize)"
    return None


def refresh_inputs(cfg: DictConfig) -> None:
    """Bring every problem's metrics and localization files up to date (or refuse, with on_stale=error)."""
    require_all_trained(cfg)  # and trained with this run's settings: refreshing would mix in other ones
    for data in prepare_data(cfg, show_progress=False).values():
        if cfg.on_stale == "error":
            stale = stale_input(cfg, data)
            if stale:
                raise StaleInputError(f"{stale[0]}: {stale[1]}, or pass on_stale=recompute")
            continue
        localize_problem(cfg, data, fresh_localize_meta(cfg, data))  # its metrics, CAMs and decoders refreshed first
