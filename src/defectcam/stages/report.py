"""`defectcam-report`: the paper's tables (CSV, Markdown, LaTeX) and one self-contained report.html.

The page leads with the answer: per problem, the entry chosen on validation and its test scores
with intervals, with and without the classifier gate. Tables are rebuilt only from inputs that
belong to the current checkpoint and settings (stale ones are recomputed, or refused with
on_stale=error).
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from defectcam.data.prepare import problem_dir
from defectcam.io import write_text
from defectcam.report.build import (
    SCORE_COLUMNS,
    answer_sentences,
    classification_display,
    classification_table,
    heat_matrix,
    localization_matrix,
    localization_rows,
    localization_table,
    per_problem_matrix,
    summary_table,
)
from defectcam.report.html import collapsible, heat_table_html, image_tag, report_page, table_html
from defectcam.report.paper import QUOTED_LOCALIZATION
from defectcam.report.tables import with_intervals, write_table
from defectcam.stages.answer_strip import STRIP_FILE
from defectcam.stages.freshness import refresh_inputs
from defectcam.stages.settings import output_dir, problems_of, validate
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)
INTERVAL_SCORES = ("miou", "all_miou")
PERCENT = ["miou", "all_miou", "false_alarm", "image_false_alarm", "pixel_auroc", "pxap", "baseline_miou", "reference_miou",
           "share_of_reference"]
MIOU_NOTE = (
    "mIoU = mean per-image defect IoU over the defective test images (the number comparable to the reference study); "
    "all-mIoU = mean per-image IoU over all test images, a defect-free image scoring 1 when nothing is predicted on it "
    "(dominated by defect-free images: never rank methods by it alone). Masks are scored at their native resolution. "
    "[low, high] = 95 % bootstrap interval over images. gate 'classifier': the prediction is emptied where the "
    "classifier says defect-free (a missed defect scores 0). Pixel AUROC / PxAP pool the pixels of the defective "
    "test images. Baselines go through the same code."
)


def selection_note(cfg: DictConfig) -> str:
    """Which validation score chose the thresholds, for every caption."""
    return (f"Every threshold was chosen on validation by {cfg.localize.select_on} (exactly, over every distinct value "
            f"of the validation maps; the ellipse post-process over candidates), then applied to test.")


def run_report(cfg: DictConfig) -> dict[str, str]:
    """Write tables/ and report.html under the experiment's output folder; returns their paths."""
    validate(cfg)
    refresh_inputs(cfg)
    out = output_dir(cfg)
    dirs = {p: problem_dir(out, p) for p in problems_of(cfg)}
    tables = out / "tables"
    note = selection_note(cfg)
    classification = classification_table(dirs)
    write_table(classification, tables, "classification", "Classification on the test split (defect = positive class)",
                classification_display(classification), SCORE_COLUMNS)
    rows = localization_rows(dirs)
    images = localization_rows(dirs, "localization_images.csv")
    localization = localization_table(rows)
    matrix = localization_matrix(localization, images, int(cfg.localize.bootstrap), int(cfg.seed))
    percent = PERCENT
    write_table(localization, tables, "localization", f"Localization (test), mean over problems. {note} {MIOU_NOTE}",
                with_intervals(matrix, INTERVAL_SCORES), percent)
    summary = summary_table(rows)
    write_table(summary, tables, "localization_summary",
                f"Per problem: the entry chosen on validation (by mIoU, by all-mIoU) and its test scores. {note}",
                with_intervals(summary, INTERVAL_SCORES), percent)
    per_problem = per_problem_matrix(localization)
    write_table(per_problem, tables, "localization_per_problem", f"Test mIoU per problem. {note}",
                per_problem, [c for c in per_problem.columns if c.startswith("P") or c == "mean"])
    fixed = localization_table(rows, "fixed")
    write_table(fixed, tables, "localization_fixed", "Localization at fixed thresholds (test)",
                fixed.groupby(["method", "layer", "gate", "postprocess", "threshold"], as_index=False)["miou"].mean(), ["miou"])
    quoted = pd.DataFrame(QUOTED_LOCALIZATION)
    write_table(quoted, tables, "localization_quoted", "Quoted from the reference study (not measured here)", percent_columns=["miou"])
    if cfg.report.html:
        write_text(out / "report.html", build_html(cfg, dirs, classification, summary, localization, matrix, quoted, out))
    log.info("report: %s", out / "report.html")
    return {"tables": str(tables), "html": str(out / "report.html")}


def build_html(cfg: DictConfig, dirs: dict[int, Path], classification: pd.DataFrame, summary: pd.DataFrame,
               localization: pd.DataFrame, matrix: pd.DataFrame, quoted: pd.DataFrame, page_dir: Path | None = None) -> str:
    """The page: the answer first (summary), then heat tables, curves, classification, CAM grids, quoted numbers."""
    note = selection_note(cfg)
    shown = with_intervals(summary, INTERVAL_SCORES)
    sentences = answer_sentences(summary, str(cfg.localize.select_on))
    # Every problem's sentence first (the answer fits one screen), then each problem's strip of test overlays.
    answer = [f"<p class='lead'>{html.escape(sentences.get(problem, f'Problem {problem}: no CAM entry was scored.'))}</p>"
              for problem in dirs]
    answer += [image_tag(folder / "figures" / STRIP_FILE, f"problem {problem}: the chosen entry on test images (best, median "
                         f"and worst defective by IoU; one defect-free)", page_dir) for problem, folder in dirs.items()]
    sections = [("The answer", "\n".join(answer) + f"<p class='note'>{note} The classifier decides by "
                 f"evaluate.decision={cfg.evaluate.decision}.</p>"
                 + collapsible("Per problem and gate: the entry chosen on validation (by mIoU, by all-mIoU), its test scores "
                               "and the best baseline chosen the same way", table_html(shown, PERCENT))
                 + f"<p class='note'>{MIOU_NOTE}</p>")]
    heat = []
    for gate in cfg.localize.gates:
        for postprocess in cfg.localize.postprocess:
            grid = heat_matrix(localization, str(gate), str(postprocess))
            heat.append(heat_table_html(grid, f"test mIoU (percent), mean over problems: gate {gate}, post-process {postprocess}"))
    sections.append(("Method x layer: test mIoU (mean over problems)", "\n".join(heat)))
    sections.append(("All entries, mean over problems (test; [low, high]: 95 % interval of the mean over problems)",
                     collapsible(f"{len(matrix)} entries x gate x post-process", table_html(with_intervals(matrix, INTERVAL_SCORES), PERCENT))))
    curves = [image_tag(folder / "figures" / "threshold_curves.png", f"problem {problem}: validation scores vs threshold", page_dir)
              for problem, folder in dirs.items()]
    sections.append(("Threshold curves (validation; log threshold axis above 0.001)", "\n".join(curves)))
    sections.append(("Classification (test split)", collapsible(
        f"per problem: the decision margin > decision_threshold (evaluate.decision={cfg.evaluate.decision}), the argmax's "
        f"scores as *_argmax", table_html(classification_display(classification), percent=False), open_=True)))
    for problem, folder in dirs.items():
        figures = [image_tag(folder / "figures" / f"cams_{m}.png", f"problem {problem}: {m}", page_dir) for m in cfg.cam.methods]
        if (folder / "figures" / "fullres.png").is_file():
            figures.append(image_tag(folder / "figures" / "fullres.png", f"problem {problem}: full-resolution maps and their starting CAM", page_dir))
        sections.append((f"Problem {problem}: CAMs on defective test images", "\n".join(figures)))
    sections.append(("Quoted from the reference study (not measured here; mIoU in percent)", table_html(quoted, percent=True)))
    problems = f"problem{'s' if len(dirs) > 1 else ''} {', '.join(str(p) for p in dirs)}"
    data = f"{cfg.data.name} {problems}, {cfg.data.split} split, {cfg.data.image_size} px"
    return report_page(f"defectcam report: {cfg.experiment_name} ({data})", sections)


main = stage_entry("report", run_report)
