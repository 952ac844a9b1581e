"""Check a predict run on a part's images against what localize scored, and draw a grid of its overlays.

    defectcam-predict experiment=dagm_cpu data.root=/data/DAGM paths.output_dir=outputs/dagm_cpu data.problems=[1] \\
        predict.input=/data/DAGM/Class1/Test predict.output=predicted/
    python scripts/check_predict.py predicted/ experiment=dagm_cpu data.root=/data/DAGM paths.output_dir=outputs/dagm_cpu \\
        data.problems=[1] [--grid grid.png]

Prints, over the test images predict wrote, the IoU of its masks with localize's (at the same entry, threshold,
post-process and gate, from the caches), the decisions that agree and the largest logit-margin difference. With
--grid, a PNG of overlays: the defective test images by predict's mask IoU with the truth (best, median, worst and
between) and defect-free ones, flagged or not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from PIL import Image, ImageDraw

from defectcam.stages.data import prepare_data
from defectcam.stages.predict_check import compare_with_localize
from defectcam.stages.settings import output_dir, problems_of

REPO = Path(__file__).resolve().parents[1]


def grid(predicted: Path, data, picks: int, path: Path) -> None:
    """Overlays of `picks` defective test images spread over the IoU ranking, and defect-free ones, with captions."""
    rows = pd.read_csv(predicted / "predictions.csv")
    names = {Path(p).name: p for p in data.table["image_path"]}
    index = {Path(p).name: i for i, p in enumerate(data.table["image_path"])}
    scored = []
    for _, row in rows.iterrows():
        name = Path(row["image"]).name
        if name not in names:
            continue
        truth = data.mask_of(index[name])
        mask = np.asarray(Image.open(predicted / row["mask"])) > 0
        union = (truth | mask).sum()
        scored.append((name, row, truth.any(), float((truth & mask).sum() / union) if truth.any() and union else float("nan")))
    defective = sorted([s for s in scored if s[2]], key=lambda s: -s[3])
    free = [s for s in scored if not s[2]]
    chosen = [defective[round(i)] for i in np.linspace(0, len(defective) - 1, picks)] if defective else []
    chosen += [s for s in free if s[1]["defect"]][:1]  # a defect-free image the classifier calls defective, if any
    chosen += [s for s in free if not s[1]["defect"]][: (-len(chosen)) % 4 or 4]  # then fill the last row of 4
    tiles = []
    for name, row, is_defective, iou in chosen:
        tile = Image.open(predicted / row["overlay"]).convert("RGB").resize((256, 256))
        draw = ImageDraw.Draw(tile)
        text = f"{name} IoU {iou:.2f}" if is_defective else f"{name} defect-free"
        draw.rectangle((0, 0, 256, 14), fill=(0, 0, 0))
        draw.text((3, 1), f"{text}, p={row['p_defect']:.2f}", fill=(255, 255, 255))
        tiles.append(np.asarray(tile))
    columns = 4
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows_of_tiles = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    Image.fromarray(np.concatenate(rows_of_tiles, axis=0)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predicted", type=Path, help="predict.output of a run on a part's images")
    parser.add_argument("overrides", nargs="+", help="the run's Hydra overrides (experiment, data.root, paths.output_dir, ...)")
    parser.add_argument("--grid", type=Path, default=None)
    parser.add_argument("--picks", type=int, default=6, help="defective images in the grid")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    problem = problems_of(cfg)[0]
    data = prepare_data(cfg, show_progress=False)[problem]
    check = compare_with_localize(cfg, data, output_dir(cfg) / f"problem_{problem}", args.predicted)
    print(f"entry {check['entry']}: {check['n']} test images; mask IoU with localize's min {check['min_iou']:.4f}, "
          f"mean {check['mean_iou']:.4f}; same decisions {check['same_decisions']} of {check['n']}; "
          f"largest logit-margin difference {check['max_margin_difference']:.2e}")
    if args.grid:
        grid(args.predicted, data, args.picks, args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
