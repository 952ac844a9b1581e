"""`defectcam-data`: generate (synthetic) or index (DAGM), validate every file once, write splits and caches."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from defectcam.data.dagm import index_dagm
from defectcam.data.prepare import ProblemData, ensure_cache, ensure_split, problem_dir
from defectcam.data.synthetic import SyntheticSpec, generate_synthetic_dagm, read_spec
from defectcam.errors import DefectcamError
from defectcam.io import write_json
from defectcam.stages.settings import output_dir, problems_of, split_settings, validate
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)


def dataset_root(cfg: DictConfig) -> Path:
    """The DAGM-layout tree to read; for data=synthetic it is generated first (skipped when up to date)."""
    root = Path(cfg.data.root).expanduser().resolve()
    if cfg.data.name == "synthetic":
        wanted = SyntheticSpec(problems=tuple(problems_of(cfg)), **dict(cfg.data.synthetic))
        on_disk = read_spec(root)
        # Problems are generated independently of each other, so a tree that holds more of them is reused
        # (and one that holds others is extended): one-problem jobs never take the others away.
        if on_disk is not None and replace(on_disk, problems=wanted.problems) == wanted:
            if set(wanted.problems) <= set(on_disk.problems):
                return root
            wanted = replace(wanted, problems=tuple(sorted(set(on_disk.problems) | set(wanted.problems))))
        generate_synthetic_dagm(root, wanted)
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
        fresh_split = not (folder / "split.csv").is_file()
        table = ensure_split(index[index["problem"] == problem], folder, split_settings(cfg))
        try:
            prepared[problem] = ensure_cache(table, folder, int(cfg.data.image_size), show_progress)
        except DefectcamError:
            if fresh_split:  # a file that does not decode must not pin a split: fixing the file must be enough
                for name in ("split.csv", "split.json"):
                    (folder / name).unlink(missing_ok=True)
            raise
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
