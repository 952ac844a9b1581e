"""`defectcam-report`: the paper's tables (CSV, Markdown, LaTeX) and one self-contained report.html."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from defectcam.data.prepare import problem_dir
from defectcam.io import write_text
from defectcam.report.build import (
    SCORE_COLUMNS,
    classification_display,
    classification_table,
    localization_matrix,
    localization_rows,
    localization_table,
    per_problem_matrix,
)
from defectcam.report.html import image_tag, report_page, table_html
from defectcam.report.paper import QUOTED_LOCALIZATION
from defectcam.report.tables import write_table
from defectcam.stages.settings import output_dir, problems_of, validate
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)
MIOU_NOTE = (
    "mIoU = mean per-image defect IoU over the defective test images, threshold chosen on validation; "
    "pixel AUROC / PxAP pool the pixels of the defective test images; baselines go through the same code."
)


def run_report(cfg: DictConfig) -> dict[str, str]:
    """Write tables/ and report.html under the experiment's output folder; returns their paths."""
    validate(cfg)
    out = output_dir(cfg)
    dirs = {p: problem_dir(out, p) for p in problems_of(cfg)}
    tables = out / "tables"
    classification = classification_table(dirs)
    write_table(classification, tables, "classification", "Classification on the test split (defect = positive class)",
                classification_display(classification), SCORE_COLUMNS)
    rows = localization_rows(dirs)
    localization = localization_table(rows)
    matrix = localization_matrix(localization)
    write_table(localization, tables, "localization", f"Localization (test). {MIOU_NOTE}",
                matrix, ["miou", "dataset_iou", "pixel_auroc", "pxap"])
    fixed = localization_table(rows, "fixed")
    write_table(fixed, tables, "localization_fixed", "Localization at fixed thresholds (test)",
                fixed.groupby(["method", "layer", "threshold"], as_index=False)["miou"].mean(), ["miou"])
    per_problem = per_problem_matrix(localization)
    write_table(per_problem, tables, "localization_per_problem", "Test mIoU per problem (threshold chosen on validation)",
                per_problem, [c for c in per_problem.columns if c.startswith("P") or c == "mean"])
    quoted = pd.DataFrame(QUOTED_LOCALIZATION)
    write_table(quoted, tables, "localization_quoted", "Quoted from the reference study (not measured here)", percent_columns=["miou"])
    if cfg.report.html:
        write_text(out / "report.html", build_html(cfg, dirs, classification, matrix, per_problem, quoted))
    log.info("report: %s", out / "report.html")
    return {"tables": str(tables), "html": str(out / "report.html")}


def build_html(cfg: DictConfig, dirs: dict[int, Path], classification: pd.DataFrame, matrix: pd.DataFrame,
               per_problem: pd.DataFrame, quoted: pd.DataFrame) -> str:
    """The report page: tables first, then per problem its CAM grids and threshold curves."""
    display = classification_display(classification)
    sections = [
        ("Classification (test split)", table_html(display, percent=False)),
        ("Localization: mean over problems (test; threshold chosen on validation)", f"<p class='note'>{MIOU_NOTE}</p>" + table_html(matrix)),
        ("Localization: test mIoU per problem", table_html(per_problem)),
        ("Quoted from the reference study (not measured here; mIoU in percent)", table_html(quoted, percent=True)),
    ]
    for problem, folder in dirs.items():
        figures = [image_tag(folder / "figures" / f"cams_{m}.png", f"problem {problem}: {m}") for m in cfg.cam.methods]
        figures.append(image_tag(folder / "figures" / "threshold_curves.png", f"problem {problem}: validation mIoU vs threshold"))
        sections.append((f"Problem {problem}", "\n".join(figures)))
    return report_page(f"defectcam report: {cfg.experiment_name}", sections)


main = stage_entry("report", run_report)
