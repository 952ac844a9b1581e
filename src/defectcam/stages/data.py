"""`defectcam-data`: generate (synthetic) or index (DAGM), validate every file once, write splits and caches."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from filelock import FileLock
from omegaconf import DictConfig

from defectcam.data.dagm import index_dagm
from defectcam.data.prepare import ProblemData, ensure_cache, ensure_split, problem_dir
from defectcam.data.synthetic import SyntheticSpec, ensure_synthetic_dagm
from defectcam.errors import DefectcamError
from defectcam.io import read_json, write_json
from defectcam.stages.settings import output_dir, problems_of, split_settings, validate
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)
LOCK_NAME = ".data.lock"  # in each problem folder (its split and cache) and the output folder (data_summary.json)


def dataset_root(cfg: DictConfig) -> Path:
    """The DAGM-layout tree to read; for data=synthetic it is generated first (reused or extended when it can be)."""
    root = Path(cfg.data.root).expanduser().resolve()
    if cfg.data.name == "synthetic":
        ensure_synthetic_dagm(root, SyntheticSpec(problems=tuple(problems_of(cfg)), **dict(cfg.data.synthetic)))
    return root


def prepare_data(cfg: DictConfig, show_progress: bool = True) -> dict[int, ProblemData]:
    """Split and cache every problem of the config (idempotent: later calls read what the first wrote)."""
    validate(cfg)
    problems = problems_of(cfg)
    index = index_dagm(dataset_root(cfg), problems)
    out = output_dir(cfg)
    prepared = {}
    for problem in problems:
        folder = problem_dir(out, problem)
        folder.mkdir(parents=True, exist_ok=True)
        # Jobs sharing an output folder (a multirun, DDP ranks) take turns per problem: check, split and cache
        # are one critical section, so no job reads or deletes files another is writing.
        with FileLock(folder / LOCK_NAME):
            prepared[problem] = prepare_problem(index[index["problem"] == problem], folder, cfg, show_progress)
    return prepared


def prepare_problem(index: pd.DataFrame, folder: Path, cfg: DictConfig, show_progress: bool) -> ProblemData:
    """One problem's split and cache (callers hold its lock); a failed first decode leaves no split behind."""
    fresh_split = not (folder / "split.csv").is_file()
    table = ensure_split(index, folder, split_settings(cfg))
    try:
        return ensure_cache(table, folder, int(cfg.data.image_size), show_progress)
    except DefectcamError:
        if fresh_split:  # a file that does not decode must not pin a split: fixing the file must be enough
            for name in ("split.csv", "split.json"):
                (folder / name).unlink(missing_ok=True)
        raise


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
    write_summary(output_dir(cfg) / "data_summary.json", summary)
    for name, parts in summary.items():
        log.info("%s: %s", name, ", ".join(f"{k} {v['images']} ({v['defective']} defective)" for k, v in parts.items()))
    return summary


def write_summary(path: Path, summary: dict[str, object]) -> None:
    """Merge this run's problems into data_summary.json, so jobs of a multirun over problems keep each other's."""
    with FileLock(path.with_name(LOCK_NAME)):
        merged = read_json(path) if path.is_file() else {}
        merged.update(summary)
        write_json(path, dict(sorted(merged.items(), key=lambda item: int(item[0].removeprefix("problem_")))))


main = stage_entry("data", run_data)
