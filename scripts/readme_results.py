"""Regenerate the README's "Results of the quick run" section from a finished run.

    make reproduce && .venv/bin/python scripts/readme_results.py [outputs/quick]

Rewrites the text between the README's `<!-- results:start -->` and `<!-- results:end -->` markers
with the run's tables (classification, mean localization, per-problem LayerCAM/baselines) and copies
one CAM grid to scripts/readme/. Numbers come only from the run's own files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

from defectcam.report.build import localization_matrix
from defectcam.report.tables import to_markdown, with_intervals

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
GRID = REPO / "scripts" / "readme" / "quick_layercam_problem1.png"


def section(out: Path) -> str:
    """The Markdown of the results section."""
    classification = pd.read_csv(out / "tables" / "classification.csv")
    shown = classification[["problem", "accuracy", "balanced_accuracy", "auc_roc", "precision", "recall", "f1", "tn", "fp",
                            "fn", "tp", "train_time_s", "latency_ms_mean"]]
    localization = pd.read_csv(out / "tables" / "localization.csv")
    images = pd.concat([pd.read_csv(p) for p in sorted(out.glob("problem_*/localization_images.csv"))], ignore_index=True)
    matrix = localization_matrix(localization, images)
    plain = matrix[(matrix["gate"] == "none") & (matrix["postprocess"] == "none")].drop(columns=["gate", "postprocess", "problems"])
    layercam = matrix[matrix["method"].isin(["layercam", "centred_ellipse"])].drop(columns=["pixel_auroc", "pxap", "problems"])
    summary = pd.read_csv(out / "tables" / "localization_summary.csv")
    summary = summary[summary["chosen_by"] == "miou"].drop(columns=["chosen_by", "select_on"])
    percent = ["miou", "all_miou", "false_alarm", "image_false_alarm", "pixel_auroc", "pxap", "baseline_miou"]
    timing = json.loads((out / "data_summary.json").read_text())
    n_test = sum(parts["test"]["images"] for parts in timing.values())
    return "\n".join([
        START,
        "## Results of the quick run",
        "",
        f"`make reproduce` on the project's 2-core CPU machine (synthetic data, {len(timing)} problems, {n_test} test images in all;",
        "regenerate this section with `.venv/bin/python scripts/readme_results.py` after a run).",
        "Scores are percent; accuracy etc. on the test split, defect = positive class; time to train in seconds,",
        "latency in ms per image at batch 1. On the CPU the same seed gives the same weights on a machine like this one (times",
        "vary from run to run; `python scripts/check_quick.py outputs/quick` checks the criteria).",
        "",
        to_markdown(shown, ["accuracy", "balanced_accuracy", "auc_roc", "precision", "recall", "f1"]),
        "Localization, mean over the problems, test split, no gate, no post-process. Every threshold was chosen on",
        "validation by mIoU (exactly, over every distinct map value); [low, high] is the 95 % bootstrap interval of the",
        "mean over problems (images resampled within each problem). mIoU = mean defect IoU over defective images;",
        "all-mIoU = mean IoU over all images (defect-free ones score 1 when nothing is predicted on them).",
        "",
        to_markdown(with_intervals(plain, ["miou", "all_miou"]), percent),
        "LayerCAM and the best geometric baseline under each gate and post-process (gate `classifier`: nothing predicted",
        "where the classifier says defect-free; post-process `ellipse`: the moment ellipse of the largest component):",
        "",
        to_markdown(with_intervals(layercam, ["miou", "all_miou"]), percent),
        "Per problem, the entry chosen on validation by mIoU, its test scores, and the best baseline chosen the same way:",
        "",
        to_markdown(with_intervals(summary, ["miou", "all_miou"]), percent),
        "LayerCAM on defective test images of problem 1 (input | ground truth | layer1..layer4):",
        "",
        f"![LayerCAM grid]({GRID.relative_to(REPO).as_posix()})",
        END,
    ])


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "outputs" / "quick")
    readme = REPO / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"readme_results: error: {readme} has no {START} ... {END} markers", file=sys.stderr)
        return 2
    GRID.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour copy: the grid reads the same at a fraction of the size.
    with Image.open(out / "problem_1" / "figures" / "cams_layercam.png") as grid:
        grid.convert("RGB").quantize(colors=256).save(GRID, optimize=True)
    head, rest = text.split(START, 1)
    readme.write_text(head + section(out) + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
