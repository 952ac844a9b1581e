"""`defectcam-reproduce`: every stage in order for one experiment; each skips what is already done."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

from defectcam.stages.cams import run_cams
from defectcam.stages.common import secondary_rank
from defectcam.stages.data import run_data
from defectcam.stages.evaluate import run_evaluate
from defectcam.stages.fullres import run_fullres
from defectcam.stages.localize import run_localize
from defectcam.stages.report import run_report
from defectcam.stages.shell import stage_entry
from defectcam.stages.train import check_train_settings, run_train

log = logging.getLogger(__name__)
STAGES = (("data", run_data), ("train", run_train), ("evaluate", run_evaluate), ("cams", run_cams), ("fullres", run_fullres),
          ("localize", run_localize), ("report", run_report))


def run_reproduce(cfg: DictConfig) -> dict[str, float]:
    """Run data -> train -> evaluate -> cams -> fullres -> localize -> report; returns seconds per stage."""
    check_train_settings(cfg)  # a bad training setting (trainer=gpu without CUDA) stops before the data is decoded
    seconds = {}
    for name, stage in STAGES:
        start = time.perf_counter()
        log.info("stage %s", name)
        stage(cfg)
        seconds[name] = round(time.perf_counter() - start, 2)
        if name == "train" and secondary_rank():
            # Lightning relaunches this whole command for each extra DDP rank; past training, rank 0 alone does the
            # rest (the later stages run on one device and write the same files).
            log.info("a secondary DDP rank: training done, the later stages are rank 0's")
            return seconds
    log.info("done in %.1f s: %s", sum(seconds.values()), seconds)
    return seconds


main = stage_entry("reproduce", run_reproduce)
