"""A Hydra callback: when a localize multirun ends, gather its jobs into sweep.csv and a plot."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from defectcam.io import atomic_path

log = logging.getLogger(__name__)
JOB_FILE = "localization_job.csv"


def gather_sweep(sweep_dir: Path, output_dir: Path) -> pd.DataFrame | None:
    """Concatenate every job's rows (one per problem x method x layer x gate x post-process x threshold, val_* and
    test_* scores);
    write sweep.csv and sweep.png (validation mIoU) in the sweep folder and in output_dir/sweep/."""
    from defectcam.report.figures import save_figure, threshold_curves  # matplotlib: 0.8 s of start-up, only to draw

    parts = sorted(sweep_dir.glob(f"*/{JOB_FILE}"))
    if not parts:
        return None
    table = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    table = table.sort_values(["problem", "method", "layer", "gate", "postprocess", "threshold"]).reset_index(drop=True)
    for folder in (sweep_dir, output_dir / "sweep"):
        with atomic_path(folder / "sweep.csv") as tmp:
            table.to_csv(tmp, index=False)
        # The plot shows the first gate and post-process of the sweep (by default: no gate, no post-process).
        shown = table[(table["gate"] == table["gate"].iloc[0]) & (table["postprocess"] == table["postprocess"].iloc[0])]
        mean = shown.groupby(["method", "layer", "threshold"], as_index=False)[["val_miou", "val_all_miou"]].mean()
        mean = mean.rename(columns={"val_miou": "miou", "val_all_miou": "all_miou"})
        title = f"threshold sweep: validation scores, mean over problems (gate {shown['gate'].iloc[0]}, post-process {shown['postprocess'].iloc[0]})"
        save_figure(threshold_curves(mean, title), folder / "sweep.png")
    log.info("sweep: %d jobs gathered into %s", len(parts), output_dir / "sweep" / "sweep.csv")
    return table


class GatherSweep(Callback):
    """Runs gather_sweep at the end of a multirun (no-op for multiruns of other stages)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        gather_sweep(Path(config.hydra.sweep.dir), Path(config.paths.output_dir).expanduser().resolve())
