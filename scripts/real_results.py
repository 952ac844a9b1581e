"""Regenerate the README's real-DAGM section from the seed runs of `dagm_cpu` (numbers only from their own files).

    .venv/bin/python scripts/real_results.py outputs/dagm_cpu_seeds [--grid predicted/] [--untimed 0,1] \
        [--ref-speed 2=15.27/15.65]

Reads every finished seed_<k> folder (problem 1), rewrites the text between the README's `<!-- real:start -->`
and `<!-- real:end -->` markers: classification per seed with mean ± std beside the reference study's quoted
result, and localization per seed (test, thresholds chosen on validation, 95 % bootstrap intervals) of the
full-resolution entry, the CAM entry validation ranks first, the best CAM entry on test (an upper bound, not a
protocol result), the fully supervised reference and the best baseline; with --grid, the overlay grid of a
predict run on the real test images is copied to scripts/readme/. A training time is a run's own wall clock: seeds
named by --untimed (paused, or sharing the machine) show none, since their wall clock measures the machine. With
--ref-speed SEED=BEFORE/AFTER (what benchmarks/reference_speed.py printed just before and just after that seed's run) it is also given
in bare-image equivalents, wall x the mean of the two, the unit the project's time budgets use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from functools import partial

import numpy as np
import pandas as pd

from defectcam.io import read_json
from defectcam.localization.products import PRODUCT_PREFIX
from defectcam.stages.seeds import seed_folders

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_io import fail as fail_as, save_grid, split_block, write_block  # noqa: E402

fail = partial(fail_as, "real_results")

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- real:start -->", "<!-- real:end -->"
GRID = REPO / "scripts" / "readme" / "real_predict_problem1.png"
CAMS = ("gradcam", "gradcampp", "layercam", "xgradcam", "hirescam", "layercam_fused", "multiplicative", "multiplicative_geometric")



def mean_std(values: pd.Series, digits: int = 3) -> str:
    """'mean ± sample std' of the values over seeds."""
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else f"{values.iloc[0]:.{digits}f}"


def with_interval(row: pd.Series, score: str = "miou") -> str:
    return f"{row[score]:.3f} [{row[f'{score}_ci_low']:.3f}, {row[f'{score}_ci_high']:.3f}]"


def train_cell(seconds: float, best_epoch: int, epochs: int, timed: bool, speeds: tuple[float, float] | None = None) -> str:
    """The table's training cell: a time only for a run timed alone, in bare-image equivalents when its ref_speed
    readings (before, after) are given."""
    if not timed:
        return f"not timed alone ({best_epoch} of {epochs})"
    if speeds is None:
        return f"{seconds:.0f} s wall, no ref_speed ({best_epoch} of {epochs})"
    return f"{seconds:.0f} s = {round(seconds * sum(speeds) / 2, -1):,.0f} eq. ({best_epoch} of {epochs})"


def classification(folders: dict[int, Path], untimed: frozenset[int] = frozenset(),
                   speeds: dict[int, tuple[float, float]] | None = None) -> tuple[list[str], pd.DataFrame]:
    """Markdown lines of the classification table, and its rows (seeds in untimed get no training time; `speeds`:
    each timed seed's ref_speed readings before and after its run)."""
    speeds = speeds or {}
    rows = []
    for seed, folder in folders.items():
        m = read_json(folder / "problem_1" / "metrics.json")
        summary = read_json(folder / "problem_1" / "train_summary.json")
        rows.append({"seed": seed, **{k: m[k] for k in ("accuracy", "balanced_accuracy", "auc_roc", "tn", "fp", "fn", "tp",
                                                         "decision_threshold")},
                     "epochs": summary["epochs"], "best_epoch": summary["best_epoch"] + 1, "train_time_s": summary["train_time_s"]})
    frame = pd.DataFrame(rows).apply(pd.to_numeric)  # a null score (metrics.json) becomes NaN, not None
    lines = ["| run | accuracy | balanced accuracy | AUC-ROC | confusion [[tn, fp], [fn, tp]] | decision threshold | train: wall = bare-image equivalents (best epoch) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in frame.iterrows():
        n = {k: int(r[k]) for k in ("seed", "tn", "fp", "fn", "tp", "best_epoch", "epochs")}  # iterrows gives floats
        lines.append(f"| seed {n['seed']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['auc_roc']:.3f} | "
                     f"[[{n['tn']}, {n['fp']}], [{n['fn']}, {n['tp']}]] | {r['decision_threshold']:.3g} | "
                     f"{train_cell(r['train_time_s'], n['best_epoch'], n['epochs'], n['seed'] not in untimed, speeds.get(n['seed']))} |")
    lines.append(f"| mean ± std | {mean_std(frame['accuracy'])} | {mean_std(frame['balanced_accuracy'])} | "
                 f"{mean_std(frame['auc_roc'])} | | | |")
    lines.append("| reference study (quoted, not measured here: its own 70/15/15 split of all 1150 images, ImageNet weights, "
                 "512 px, GPU) | 1.000 | 1.000 | 1.0 | [[147, 0], [0, 26]] | argmax | |")
    return lines, frame


def entries(folder: Path) -> dict[str, pd.Series]:
    """The test rows that the README compares, of one seed's problem 1 (val-chosen thresholds, no post-process)."""
    rows = pd.read_csv(folder / "problem_1" / "localization.csv")
    rows = rows[(rows["selection"] == "val-best") & (rows["postprocess"] == "none")]

    def test_row(method: str, layer: str, gate: str) -> pd.Series:
        return rows[(rows["split"] == "test") & (rows["method"] == method) & (rows["layer"] == layer) & (rows["gate"] == gate)].iloc[0]

    def pick(mask: pd.Series, split: str, gate: str = "none") -> pd.Series:
        part = rows[mask & (rows["split"] == split) & (rows["gate"] == gate)]
        return part.loc[part["miou"].idxmax()]

    cam = rows["method"].isin(CAMS)
    out = {}
    products = rows["method"].str.startswith(PRODUCT_PREFIX)
    for name, mask in (("fullres", rows["method"] == "fullres"), ("fullres x CAM", products),
                       ("supervised", rows["method"] == "supervised")):
        if mask.any():
            chosen = pick(mask, "val")
            out[name] = test_row(chosen["method"], chosen["layer"], "none")
            out[f"{name} gated"] = test_row(chosen["method"], chosen["layer"], "classifier")
    val_cam = pick(cam, "val")
    out["best CAM (validation)"] = test_row(val_cam["method"], val_cam["layer"], "none")
    out["best CAM (validation) gated"] = test_row(val_cam["method"], val_cam["layer"], "classifier")
    out["best CAM (test)"] = pick(cam, "test")
    baseline = pick(rows["layer"] == "-", "val")
    out["best baseline"] = test_row(baseline["method"], baseline["layer"], "none")
    return out


def localization(folders: dict[int, Path]) -> list[str]:
    """Markdown lines: per seed and entry, test mIoU [95 % CI], PxAP, image false alarm, all-mIoU; then mean ± std."""
    per_seed = {seed: entries(folder) for seed, folder in folders.items()}
    names = [n for n in ("fullres", "fullres gated", "fullres x CAM", "fullres x CAM gated", "best CAM (validation)",
                         "best CAM (validation) gated", "best CAM (test)", "supervised", "supervised gated", "best baseline")
             if all(n in e for e in per_seed.values())]
    lines = ["| entry | seed | method / layer | threshold | test mIoU [95 % CI] | PxAP | defect-free images flagged | all-mIoU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        for seed, found in per_seed.items():
            r = found[name]
            lines.append(f"| {name} | {seed} | {r['method']} {r['layer']} | {r['threshold']:.3g} | {with_interval(r)} | "
                         f"{r['pxap']:.3f} | {r['image_false_alarm'] * r['n_defect_free']:.0f} of {r['n_defect_free']} | "
                         f"{with_interval(r, 'all_miou')} |")
    lines += ["", "Mean ± std over the seeds:", "",
              "| entry | test mIoU | PxAP | share of defect-free images flagged | all-mIoU |", "| --- | --- | --- | --- | --- |"]
    for name in names:
        frame = pd.DataFrame([found[name] for found in per_seed.values()])
        lines.append(f"| {name} | {mean_std(frame['miou'])} | {mean_std(frame['pxap'])} | "
                     f"{mean_std(frame['image_false_alarm'])} | {mean_std(frame['all_miou'])} |")
    for name, label in (("fullres", "Full-resolution"), ("fullres x CAM", "Full-resolution x CAM")):
        if name in names:
            gain = [found[name]["miou"] - found["best CAM (validation)"]["miou"] for found in per_seed.values()]
            pxap = [found[name]["pxap"] - found["best CAM (validation)"]["pxap"] for found in per_seed.values()]
            lines += ["", f"{label} minus the validation-chosen CAM entry, per seed: test mIoU "
                          f"{', '.join(f'{g:+.3f}' for g in gain)} (mean {np.mean(gain):+.3f}); PxAP "
                          f"{', '.join(f'{g:+.3f}' for g in pxap)} (mean {np.mean(pxap):+.3f})."]
    return lines


def section(parent: Path, grid: bool, untimed: frozenset[int] = frozenset(),
            speeds: dict[int, tuple[float, float]] | None = None) -> str:
    folders = seed_folders(parent)
    speeds = speeds or {}
    if not folders:
        fail(f"{parent} holds no finished seed_<k> folder")
    for option, seeds in (("--untimed", untimed), ("--ref-speed", set(speeds))):
        unknown = sorted(set(seeds) - set(folders))
        if unknown:
            fail(f"{option} names seed(s) {unknown} that {parent} has no finished run of")
    both = sorted(untimed & set(speeds))
    if both:
        fail(f"--ref-speed and --untimed both name seed(s) {both}: a run not timed alone has no training time to convert")
    class_lines, _ = classification(folders, untimed, speeds)
    return "\n".join([
        START,
        *class_lines,
        "",
        *localization(folders),
        *([ "", f"![predict on real test images]({GRID.relative_to(REPO).as_posix()})"] if grid else []),
        END,
    ])


def seed_list(text: str) -> frozenset[int]:
    """'0,1' -> {0, 1}; argparse turns the ValueError of a non-integer into one line and exit code 2."""
    return frozenset(int(part) for part in text.split(",") if part.strip())


def speed_pairs(text: str) -> dict[int, tuple[float, float]]:
    """'0=14.98/14.49,2=15.27/15.65' -> {seed: (before, after)}; argparse turns a ValueError into one line and exit 2."""
    pairs = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        seed, _, readings = item.partition("=")
        before, _, after = readings.partition("/")
        pairs[int(seed)] = (float(before), float(after))
        if min(pairs[int(seed)]) <= 0:
            raise ValueError(item)
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parent", type=Path, help="the folder of the seed_<k> runs (make seeds EXPERIMENT=dagm_cpu)")
    parser.add_argument("--grid", type=Path, default=None, help="a PNG grid of predict's overlays to show")
    parser.add_argument("--untimed", type=seed_list, default=frozenset(),
                        help="comma-separated seeds whose runs were not timed alone (no training time is shown)")
    parser.add_argument("--ref-speed", type=speed_pairs, default={},
                        help="SEED=BEFORE/AFTER,...: benchmarks/reference_speed.py just before and after each timed seed's run")
    args = parser.parse_args()
    readme = REPO / "README.md"
    head, _, tail = split_block("real_results", readme, START, END)
    block = section(args.parent, args.grid is not None, args.untimed, args.ref_speed)  # every check before anything is written
    if args.grid:
        save_grid(args.grid, GRID)
    write_block(readme, head, block, tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
