"""Ablation of the full-resolution stage on a finished run: the same classifier and CAMs, one decoder per variant.

    python scripts/fullres_ablation.py experiment=dagm_cpu data.root=/data/DAGM paths.output_dir=outputs/dagm_cpu

Every variant (VARIANTS below, or --variant "NAME=override;override" ...) trains its decoder (or reuses the
variant before it's, or the run's own, per method, when only fullres.tta or fullres.eval_batch_size differ) into <output_dir>/ablation/<name>/ (the run's split, caches, best.ckpt and CAMs are linked, never rewritten) and is
scored by localize's protocol (threshold chosen on validation, test with intervals), ungated and gated. Prints a
Markdown table per problem beside the run's best CAM entry (ungated, no post-process, chosen on validation) and
writes it to <output_dir>/ablation/ablation.csv. A variant with fullres.supervision holding `masks` also gets rows of the
fully supervised reference (method `supervised`), labelled as a reference.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from hydra import compose, initialize_config_dir

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from defectcam.data.prepare import ProblemData

REPO = Path(__file__).resolve().parents[1]
# name -> overrides, each variant adding one thing to the one before (the first: seeds only). A variant whose
# training settings are those of the variant before it, or of the run itself, reuses those decoders (only how maps
# are made differs, e.g. fullres.tta), so it measures TTA on the very same weights.
VARIANTS = {
    "seeds only": ["fullres.negatives=false", "fullres.pairwise.weight=0", "fullres.size.weight=0", "fullres.tta=none"],
    "+ negative images": ["fullres.negatives=true", "fullres.pairwise.weight=0", "fullres.size.weight=0", "fullres.tta=none"],
    "+ pairwise term": ["fullres.negatives=true", "fullres.pairwise.weight=1", "fullres.size.weight=0", "fullres.tta=none"],
    "+ size term": ["fullres.negatives=true", "fullres.pairwise.weight=1", "fullres.size.weight=1", "fullres.tta=none"],
    "+ size term, TTA flips": ["fullres.negatives=true", "fullres.pairwise.weight=1", "fullres.size.weight=1", "fullres.tta=flips"],
    "+ size term, TTA dihedral": ["fullres.negatives=true", "fullres.pairwise.weight=1", "fullres.size.weight=1",
                                  "fullres.tta=dihedral"],
}
LINKED = ("split.csv", "split.json", "cache", "checkpoints/best.ckpt", "train_summary.json", "metrics.json", "predictions.csv", "cams")
SCORED = ["localize.baselines=[]", "localize.postprocess=[none]", "localize.gates=[none,classifier]"]  # + the decoders' methods


def link_run(run: Path, target: Path, problems: list[int]) -> None:
    """Link what the decoder and localize read from a finished run (nothing of the run is written through them)."""
    for problem in problems:
        for name in LINKED:
            source, link = run / f"problem_{problem}" / name, target / f"problem_{problem}" / name
            if source.exists() and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(source.resolve(), link)


def variant_folder(run: Path, name: str) -> Path:
    """The variant's folder: its name with what a Hydra override value cannot hold (brackets, quotes...) as '_'."""
    return run / "ablation" / re.sub(r"[^\w.-]", "_", name.replace(" ", "_").replace("+", "plus").replace(",", ""))


def reuse_decoders(cfg: DictConfig, prepared: dict[int, ProblemData], sources: list[Path], target: Path) -> None:
    """Per problem and method, copy into `target` the decoder (and its selection rows) of the first of `sources` that
    the fullres stage would reuse as it is (the same training settings for that method: only fullres.tta,
    fullres.eval_batch_size or another method's settings differ), so that a variant which changes only how maps are
    made measures those very weights; the stage trains whatever no source holds. A variant's own decoders (a rerun)
    stay."""
    from defectcam.stages.fullres import decoder_path, fullres_meta, reusable_decoders

    for problem, data in prepared.items():
        meta, folder = fullres_meta(cfg, data), target / f"problem_{problem}"
        if meta is None or (folder / "fullres" / "selection.csv").exists():
            continue
        rows: list[dict[str, object]] = []
        copied: set[str] = set()
        for source in sources:
            source_rows, chosen = reusable_decoders(source / f"problem_{problem}", meta)
            for method in [m for m in chosen if m not in copied]:
                decoder_path(folder, method).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(decoder_path(source / f"problem_{problem}", method), decoder_path(folder, method))
                rows += [row for row in source_rows if row["method"] == method]
                copied.add(method)
        if rows:
            pd.DataFrame(rows).to_csv(folder / "fullres" / "selection.csv", index=False)


def run_variant(overrides: list[str], name: str, extra: list[str], previous: str | None = None) -> pd.DataFrame:
    """Train and score one variant (reusing, per method, the decoder of `previous`, or else of the run, where only
    inference settings or another method's settings differ); its rows of the fullres entry."""
    from defectcam.fullres import DECODER_METHODS
    from defectcam.stages.data import prepare_data
    from defectcam.stages.localize import run_localize
    from defectcam.stages.settings import fullres_supervisions, output_dir, problems_of

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = compose(config_name="config", overrides=overrides)
        run = output_dir(base)
        folder = variant_folder(run, name)
        cfg = compose(config_name="config", overrides=[*overrides, *extra, *SCORED, f"paths.output_dir={folder}"])
    cfg.localize.methods = [DECODER_METHODS[supervision] for supervision in fullres_supervisions(cfg)]  # no CAM entries
    link_run(run, folder, problems_of(cfg))
    prepared = prepare_data(cfg, show_progress=False)
    # the variant before it first (a TTA row after a training change), then the run itself (a TTA-only variant)
    reuse_decoders(cfg, prepared, ([variant_folder(run, previous)] if previous else []) + [run], folder)
    run_localize(cfg)
    rows = pd.concat([pd.read_csv(folder / f"problem_{p}" / "localization.csv") for p in problems_of(cfg)])
    rows = rows[rows["method"].isin(["fullres", "supervised"]) & (rows["selection"] == "val-best")]
    # the fully supervised reference (fullres.supervision with masks) is labelled as such, never as a weak variant
    return rows.assign(variant=[name if method == "fullres" else f"{name}: {method} reference" for method in rows["method"]])


def best_cam(run: Path, problems: list[int]) -> pd.DataFrame:
    """The run's CAM entry ranked first on validation (ungated, no post-process, by mIoU), its test row."""
    from defectcam.localization.products import PRODUCT_PREFIX

    out = []
    for problem in problems:
        if not (run / f"problem_{problem}" / "localization.csv").is_file():  # the run's own localize has not run yet
            continue
        rows = pd.read_csv(run / f"problem_{problem}" / "localization.csv")
        rows = rows[(rows["selection"] == "val-best") & (rows["gate"] == "none") & (rows["postprocess"] == "none")
                    & (rows["layer"] != "-") & ~rows["method"].isin(["fullres", "supervised"])
                    & ~rows["method"].str.startswith(PRODUCT_PREFIX)]
        val = rows[rows["split"] == "val"]
        pick = val.loc[val["miou"].idxmax()]
        test = rows[(rows["split"] == "test") & (rows["method"] == pick["method"]) & (rows["layer"] == pick["layer"])]
        out.append(test.assign(variant=f"best CAM: {pick['method']} {pick['layer']}"))
    return pd.concat(out) if out else pd.DataFrame()


def table(rows: pd.DataFrame) -> str:
    """Markdown: per variant and gate, the test scores at the validation-chosen threshold."""
    lines = ["| problem | variant | gate | threshold | test mIoU [95 % CI] | PxAP | image false alarm | all-mIoU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, row in rows[rows["split"] == "test"].iterrows():
        lines.append(f"| {row['problem']} | {row['variant']} | {row['gate']} | {row['threshold']:.3g} | {row['miou']:.3f} "
                     f"[{row['miou_ci_low']:.3f}, {row['miou_ci_high']:.3f}] | {row['pxap']:.3f} | {row['image_false_alarm']:.3f} | "
                     f"{row['all_miou']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="+", help="the run's Hydra overrides (experiment, data.root, paths.output_dir, seed)")
    parser.add_argument("--variant", action="append", default=[], help="NAME=override;override (instead of the built-in list)")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant)
    chosen = {name: extra.split(";") for name, extra in variants.items()} if variants else VARIANTS
    from defectcam.stages.settings import output_dir, problems_of

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = compose(config_name="config", overrides=args.overrides)
    run, problems = output_dir(base), problems_of(base)
    results, previous = [], None
    for name, extra in chosen.items():
        print(f"variant {name}: {' '.join(extra)}", file=sys.stderr, flush=True)
        results.append(run_variant(args.overrides, name, extra, previous))
        previous = name
        print(table(pd.concat(results)), flush=True)
    frame = pd.concat([best_cam(run, problems), *results])  # the run's own localization.csv, read last
    frame.to_csv(run / "ablation" / "ablation.csv", index=False)
    print(table(frame))


if __name__ == "__main__":
    main()
