"""Regenerate the README's "Results of the quick run" section from a finished run.

    make reproduce && .venv/bin/python scripts/readme_results.py [outputs/quick]
        [--seeds "2 threads=outputs/quick_seeds" --seeds "1 thread=outputs/quick_seeds_1thread"]

Rewrites the text between the README's `<!-- results:start -->` and `<!-- results:end -->` markers
with the run's tables (classification, mean localization, per-problem LayerCAM/baselines), with
`--seeds LABEL=DIR` (DIR holding the seed_<k> folders of `make seeds`) the minimum and mean over seeds of
scripts/check_quick.py's criteria (without --seeds the README's seeds block is kept as it is), and copies one
CAM grid to scripts/readme/. Numbers come only from the runs' own files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from functools import partial

import pandas as pd

from defectcam.io import read_json
from defectcam.report.build import localization_matrix
from defectcam.report.tables import to_markdown, with_intervals
from defectcam.stages.seeds import seed_folders

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_quick import SCORES, run_scores  # noqa: E402  (the criteria, computed one way)
from readme_io import fail as fail_as, save_grid, split_block, write_block  # noqa: E402

fail = partial(fail_as, "readme_results")

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
SEEDS_START, SEEDS_END = "<!-- seeds:start -->", "<!-- seeds:end -->"  # rewritten only when --seeds is given
GRID = REPO / "scripts" / "readme" / "quick_layercam_problem1.png"
RUN_FILES = ("tables/classification.csv", "tables/localization.csv", "tables/localization_summary.csv", "data_summary.json",
             "problem_1/figures/cams_layercam.png")


def seeds_table(groups: list[tuple[str, Path]]) -> pd.DataFrame:
    """Per label (e.g. the thread count) and problem: the minimum and mean over seeds of check_quick's scores."""
    rows = []
    for label, parent in groups:
        folders = seed_folders(parent)
        if not folders:
            fail(f"{parent} holds no finished seed_<k> folder")
        frame = pd.concat([run_scores(folder) for folder in folders.values()], ignore_index=True)
        for problem, group in frame.groupby("problem"):
            row = {"runs": label, "problem": problem, "seeds": ",".join(map(str, folders))}
            for score in SCORES:
                row[f"{score}_min"], row[f"{score}_mean"] = group[score].min(), group[score].mean()
            rows.append(row)
    return pd.DataFrame(rows)


def seeds_lines(groups: list[tuple[str, Path]]) -> list[str]:
    """The Markdown lines of the seeds part, between its own markers."""
    table = seeds_table(groups)
    return [
        SEEDS_START,
        "Over training seeds (the `seed_<k>` folders of `make seeds`, the split fixed), per problem: the minimum and the",
        "mean over seeds of the criteria of `scripts/check_quick.py` (test accuracy and balanced accuracy at the",
        "validation-chosen decision; the argmax decision's accuracy beside them; margin = LayerCAM's validation-chosen",
        "layer minus the best baseline, test mIoU, no gate, no post-process), one block per set of seed runs:",
        "",
        to_markdown(table, [c for c in table.columns if c.startswith(("accuracy", "balanced", "margin"))]),
        SEEDS_END,
    ]


def section(out: Path, seeds: str) -> str:
    """The Markdown of the results section; `seeds`: the seeds block (with its markers) to put in it."""
    classification = pd.read_csv(out / "tables" / "classification.csv")
    shown = classification[["problem", "decision_threshold", "accuracy", "balanced_accuracy", "auc_roc", "precision", "recall",
                            "f1", "tn", "fp", "fn", "tp", "accuracy_argmax", "balanced_accuracy_argmax", "train_time_s",
                            "latency_ms_mean"]]
    localization = pd.read_csv(out / "tables" / "localization.csv")
    images = pd.concat([pd.read_csv(p) for p in sorted(out.glob("problem_*/localization_images.csv"))], ignore_index=True)
    matrix = localization_matrix(localization, images)
    plain = matrix[(matrix["gate"] == "none") & (matrix["postprocess"] == "none")].drop(columns=["gate", "postprocess", "problems"])
    layercam = matrix[matrix["method"].isin(["layercam", "fullres", "supervised", "centred_ellipse"])].drop(
        columns=["pixel_auroc", "pxap", "problems"])
    summary = pd.read_csv(out / "tables" / "localization_summary.csv")
    summary = summary[summary["chosen_by"] == "miou"].drop(columns=["chosen_by", "select_on"])
    percent = ["miou", "all_miou", "false_alarm", "image_false_alarm", "pixel_auroc", "pxap", "baseline_miou", "reference_miou",
               "share_of_reference"]
    timing = read_json(out / "data_summary.json")
    n_test = sum(parts["test"]["images"] for parts in timing.values())
    return "\n".join([
        START,
        "## Results of the quick run",
        "",
        f"`make reproduce` on the project's 2-core CPU machine (synthetic data, {len(timing)} problems, {n_test} test images in all;",
        "regenerate this section with `.venv/bin/python scripts/readme_results.py` after a run; the seeds block below with `--seeds LABEL=DIR`).",
        "Scores are percent; accuracy etc. on the test split, defect = positive class; time to train in seconds,",
        "latency in ms per image at batch 1. The decision is `logit_margin > decision_threshold`, the threshold chosen on",
        "validation (`evaluate.decision=validation`); `accuracy_argmax` and `balanced_accuracy_argmax` are the argmax",
        "decision's (margin > 0, the reference study's). `python scripts/check_quick.py outputs/quick` checks the quick",
        "experiment's criteria: test accuracy and balanced accuracy >= 0.9 on every problem, and LayerCAM at its",
        "validation-chosen layer at least 0.10 test mIoU above every baseline (no gate, no post-process).",
        "",
        "**Bit-identical only on the same kind of machine.** The same seed gives the same weights on the same kind of CPU",
        "with the same thread count; another CPU or thread count sums in another order, training takes another path,",
        "and every number here moves (a problem trained with 5 epochs once fell to accuracy 0.75 that way). The seed table",
        "below is the spread to expect; times vary from run to run. \"The same kind\" means the same CPU model, not the",
        "same name: the bootstrap intervals below resample test images for one set of trained models and do not cover",
        "retraining on another machine (`benchmarks/RESULTS.md`, \"The quick run on another machine\", has a measured case).",
        "",
        to_markdown(shown, ["accuracy", "balanced_accuracy", "auc_roc", "precision", "recall", "f1", "accuracy_argmax",
                            "balanced_accuracy_argmax"]),
        seeds,
        "Localization, mean over the problems, test split, no gate, no post-process. Every threshold was chosen on",
        "validation by mIoU (exactly, over every distinct map value); [low, high] is the 95 % bootstrap interval of the",
        "mean over problems (images resampled within each problem). mIoU = mean defect IoU over defective images;",
        "all-mIoU = mean IoU over all images (defect-free ones score 1 when nothing is predicted on them).",
        "",
        to_markdown(with_intervals(plain, ["miou", "all_miou"]), percent),
        "<details><summary>LayerCAM, the full-resolution decoder and the best baseline under each gate and post-process"
        "</summary>",
        "",
        "LayerCAM, the full-resolution decoder (`fullres`, its layer = its starting CAM) and the best geometric baseline",
        "under each gate and post-process (gate `classifier`: nothing predicted where the classifier says defect-free;",
        "post-process `ellipse`: the moment ellipse of the largest component):",
        "",
        to_markdown(with_intervals(layercam, ["miou", "all_miou"]), percent),
        "</details>",
        "",
        "<details><summary>Per problem, the entry chosen on validation and its test scores</summary>",
        "",
        "Per problem, the entry chosen on validation by mIoU, its test scores, and the best baseline chosen the same way:",
        "",
        to_markdown(with_intervals(summary, ["miou", "all_miou"]), percent),
        "</details>",
        "",
        "LayerCAM on defective test images of problem 1 (input | ground truth | layer1..layer4):",
        "",
        f"![LayerCAM grid]({GRID.relative_to(REPO).as_posix()})",
        END,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "outputs" / "quick")
    parser.add_argument("--seeds", action="append", default=[], metavar="LABEL=DIR",
                        help="a folder of seed_<k> runs and its label (repeatable)")
    args = parser.parse_args()
    out = args.out
    if any("=" not in item for item in args.seeds):
        parser.error("--seeds takes LABEL=DIR, e.g. --seeds '2 threads=outputs/quick_seeds'")
    groups = [(label, Path(folder)) for label, folder in (item.split("=", 1) for item in args.seeds)]
    missing = [name for name in RUN_FILES if not (out / name).is_file()]
    if missing:
        fail(f"{out} is not a finished run: it has no {missing[0]}")
    readme = REPO / "README.md"
    head, old, tail = split_block("readme_results", readme, START, END)
    seeds = "\n".join(seeds_lines(groups)) if groups else (
        SEEDS_START + old.split(SEEDS_START, 1)[1].split(SEEDS_END, 1)[0] + SEEDS_END if SEEDS_START in old else "")
    try:  # every input is read before anything is written
        block = section(out, seeds)
    except (KeyError, ValueError, OSError) as error:
        fail(f"{out}: its tables are not a finished run's ({type(error).__name__}: {error})")
    save_grid(out / "problem_1" / "figures" / "cams_layercam.png", GRID)
    write_block(readme, head, block, tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
