"""`defectcam-data`: generate (synthetic) or index (DAGM), validate every file once, write splits and caches."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from defectcam.data.dagm import index_dagm
from defectcam.data.prepare import ProblemData, ensure_cache, ensure_split, problem_dir
from defectcam.data.synthetic import SyntheticSpec, generate_synthetic_dagm
from defectcam.io import write_json
from defectcam.stages.settings import output_dir, problems_of, split_settings, validate
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)


def dataset_root(cfg: DictConfig) -> Path:
    """The DAGM-layout tree to read; for data=synthetic it is generated first (skipped when up to date)."""
    root = Path(cfg.data.root).expanduser().resolve()
    if cfg.data.name == "synthetic":
        options = dict(cfg.data.synthetic)
        generate_synthetic_dagm(root, SyntheticSpec(problems=tuple(problems_of(cfg)), **options))
    return root


def prepare_data(cfg: DictConfig, show_progress: bool = True) -> dict[int, ProblemData]:
    """Split and cache every problem of the config (idempotent: later calls read what the first wrote)."""
    validate(cfg)
    problems = problems_of(cfg)
    index = index_dagm(dataset_root(cfg), problems)
    out = output_dir(cfg)
    prepared = {}
    for problem in problems:
        table = ensure_split(index[index["problem"] == problem], problem_dir(out, problem), split_settings(cfg))
        prepared[problem] = ensure_cache(table, problem_dir(out, problem), int(cfg.data.image_size), show_progress)
    return prepared


def run_data(cfg: DictConfig) -> dict[str, object]:
    """The data stage: returns (and writes data_summary.json) image and defect counts per problem and part."""
    prepared = prepare_data(cfg)
    summary = {
        f"problem_{p}": {
            part: {"images": int((d.table["part"] == part).sum()), "defective": int(d.table.loc[d.table["part"] == part, "label"].sum())}
            for part in ("train", "val", "test")
        }
        for p, d in prepared.items()
    }
    write_json(output_dir(cfg) / "data_summary.json", summary)
    for name, parts in summary.items():
        log.info("%s: %s", name, ", ".join(f"{k} {v['images']} ({v['defective']} defective)" for k, v in parts.items()))
    return summary


main = stage_entry("data", run_data)
