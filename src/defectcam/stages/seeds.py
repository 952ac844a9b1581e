"""Several training seeds in one command: mean and standard deviation of the results over seeds.

    defectcam-reproduce -m seed=0,1,2 'paths.output_dir=outputs/quick_seeds/seed_${seed}'

(`make seeds SEEDS=0,1,2`). Each seed trains, evaluates and localizes in its own folder (the split
is fixed by `data.split_seed`, so only training varies); when the multirun ends, a Hydra callback
gathers every `seed_<k>/tables/` beside them into `seeds/`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from defectcam.io import write_text
from defectcam.report.html import report_page, table_html
from defectcam.report.tables import write_table

log = logging.getLogger(__name__)
SEED_FOLDER = re.compile(r"^seed_(\d+)$")
CLASSIFICATION_SCORES = ["accuracy", "balanced_accuracy", "auc_roc", "average_precision", "precision", "recall", "f1",
                         "accuracy_argmax", "balanced_accuracy_argmax", "decision_threshold"]
LOCALIZATION_SCORES = ["miou", "all_miou", "false_alarm", "image_false_alarm", "pixel_auroc", "pxap", "threshold"]
ENTRY = ["problem", "method", "layer", "gate", "postprocess"]


def seed_folders(parent: Path) -> dict[int, Path]:
    """The `seed_<k>` folders under parent that hold finished tables, by seed."""
    found = {}
    for folder in sorted(parent.glob("seed_*")):
        match = SEED_FOLDER.match(folder.name)
        if match and (folder / "tables" / "localization.csv").is_file() and (folder / "tables" / "classification.csv").is_file():
            found[int(match.group(1))] = folder
    return found


def _over_seeds(frames: dict[int, pd.DataFrame], keys: list[str], scores: list[str]) -> pd.DataFrame:
    """Mean, sample standard deviation and minimum of each score over seeds, per key (scores a table lacks,
    written by an older defectcam, are left out)."""
    stacked = pd.concat([frame.assign(seed=seed) for seed, frame in frames.items()], ignore_index=True)
    grouped = stacked.groupby(keys, sort=False)
    table = grouped.size().rename("seeds").to_frame()
    for score in (s for s in scores if s in stacked.columns):
        table[f"{score}_mean"] = grouped[score].mean()
        table[f"{score}_std"] = grouped[score].std(ddof=1)
        table[f"{score}_min"] = grouped[score].min()
    return table.reset_index()


def aggregate_seeds(parent: Path) -> Path | None:
    """Write parent/seeds/{classification,localization}_seeds.{csv,md,tex} and report.html; None if no seed folder."""
    folders = seed_folders(parent)
    if not folders:
        return None
    classification = {s: pd.read_csv(f / "tables" / "classification.csv") for s, f in folders.items()}
    localization = {s: pd.read_csv(f / "tables" / "localization.csv") for s, f in folders.items()}
    out = parent / "seeds"
    seeds = ", ".join(map(str, folders))
    per_class = _over_seeds(classification, ["problem"], CLASSIFICATION_SCORES)
    per_entry = _over_seeds(localization, ENTRY, LOCALIZATION_SCORES)
    mean_entry = per_entry.groupby(ENTRY[1:], sort=False)[[c for c in per_entry.columns if c.endswith(("_mean", "_std", "_min"))]].mean().reset_index()
    percent = [c for c in per_entry.columns if c.startswith(tuple(s for s in LOCALIZATION_SCORES if s != "threshold"))]
    write_table(per_class, out, "classification_seeds", f"Classification (test) over seeds {seeds}: mean, std and min",
                percent_columns=[c for c in per_class.columns if c not in ("seeds", "problem") and not c.startswith("decision_threshold")])
    write_table(per_entry, out, "localization_seeds", f"Localization (test, val-chosen thresholds) over seeds {seeds}: mean, std and min",
                mean_entry, percent)
    page = report_page(f"defectcam: {len(folders)} training seeds ({seeds})", [
        ("Localization: mean over problems of the per-problem mean, std and min over seeds", table_html(mean_entry, percent)),
        ("Localization per problem", table_html(per_entry, percent)),
        ("Classification per problem", table_html(per_class, [c for c in per_class.columns if c.startswith(tuple(CLASSIFICATION_SCORES))
                                                              and not c.startswith("decision_threshold")])),
    ])
    write_text(out / "report.html", page)
    log.info("seeds %s gathered into %s", seeds, out)
    return out


class GatherSeeds(Callback):
    """At the end of a multirun that sweeps `seed`, aggregate the seed_<k> folders beside the output folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        swept = any(str(o).split("=", 1)[0].lstrip("+~") == "seed" for o in config.hydra.overrides.task)
        if not swept:
            return
        output = Path(config.paths.output_dir).expanduser().resolve()
        if aggregate_seeds(output.parent) is None:
            log.warning("seed multirun: no seed_<k> folder with tables under %s; put seed_${seed} in paths.output_dir", output.parent)
