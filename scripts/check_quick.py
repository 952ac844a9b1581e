"""Check the quick experiment's acceptance criteria on the tables of one run or of several (run after `make
reproduce`, or after `make seeds` on every seed folder):

    python scripts/check_quick.py [outputs/quick]
    python scripts/check_quick.py outputs/quick_seeds/seed_*

On every problem of every run:
1. test accuracy >= 0.9 and balanced accuracy >= 0.9 (the classifier's decision, evaluate.decision);
2. LayerCAM's best layer (chosen by validation mIoU) beats every baseline's test mIoU by at least 0.10 (10 IoU
   points, the "clear margin" of docs/cam_math.md, "When a map is localizing").
Localization on the rows comparable to the reference study: raw maps, no classifier gate, no post-process
(gate=none, postprocess=none). Prints one line per run and problem, with several runs the minimum and mean over
them per problem, and exits 1 if any criterion fails anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

BASELINES = ("full_image", "centred_ellipse", "random")
MIN_ACCURACY, MIN_BALANCED_ACCURACY, MIN_MARGIN = 0.9, 0.9, 0.10
SCORES = ["accuracy", "balanced_accuracy", "accuracy_argmax", "margin"]


def run_scores(out: Path) -> pd.DataFrame:
    """One row per problem of a run: its classification scores, LayerCAM's val-chosen layer and margin."""
    classification = pd.read_csv(out / "tables" / "classification.csv").set_index("problem")
    table = pd.concat([pd.read_csv(d / "localization.csv") for d in sorted(out.glob("problem_*"))])
    plain = (table["gate"] == "none") & (table["postprocess"] == "none")
    best = table[(table["selection"] == "val-best") & plain]
    rows = []
    for problem, group in best.groupby("problem"):
        val = group[(group["split"] == "val") & (group["method"] == "layercam")]
        layer = val.loc[val["miou"].idxmax(), "layer"]  # chosen on validation (the first in table order on ties)
        test = group[group["split"] == "test"].set_index(["method", "layer"])["miou"]
        scores = classification.loc[problem]
        rows.append({"run": str(out), "problem": problem, "accuracy": scores["accuracy"],
                     "balanced_accuracy": scores["balanced_accuracy"],
                     "accuracy_argmax": scores.get("accuracy_argmax", scores["accuracy"]),  # older tables: argmax only
                     "layer": layer, "layercam": test[("layercam", layer)],
                     "baseline": max(test[(name, "-")] for name in BASELINES)})
    frame = pd.DataFrame(rows)
    frame["margin"] = frame["layercam"] - frame["baseline"]
    frame["ok"] = ((frame["accuracy"] >= MIN_ACCURACY) & (frame["balanced_accuracy"] >= MIN_BALANCED_ACCURACY)
                   & (frame["margin"] >= MIN_MARGIN))
    return frame


def main() -> int:
    runs = [Path(a) for a in sys.argv[1:]] or [Path("outputs/quick")]
    for out in runs:
        if not (out / "tables" / "classification.csv").is_file():
            print(f"{out / 'tables' / 'classification.csv'}: no report tables; run make reproduce first", file=sys.stderr)
            return 2
    frame = pd.concat([run_scores(out) for out in runs], ignore_index=True)
    for row in frame.itertuples():
        where = f"{row.run} " if len(runs) > 1 else ""
        print(f"{where}problem {row.problem}: accuracy {row.accuracy:.3f}, balanced accuracy {row.balanced_accuracy:.3f} "
              f"(argmax accuracy {row.accuracy_argmax:.3f}), LayerCAM {row.layer} test mIoU {row.layercam:.3f} vs best "
              f"baseline {row.baseline:.3f} (margin {row.margin:+.3f}) {'ok' if row.ok else 'FAIL'}")
    if len(runs) > 1:
        summary = frame.groupby("problem")[SCORES].agg(["min", "mean"])
        print(f"over {len(runs)} runs, min / mean per problem:")
        for problem, row in summary.iterrows():
            print(f"problem {problem}: " + ", ".join(f"{s} {row[(s, 'min')]:.3f} / {row[(s, 'mean')]:.3f}" for s in SCORES))
    failures = int((~frame["ok"]).sum())
    if len(runs) > 1:
        print(f"criteria met on {len(frame) - failures} of {len(frame)} run x problem pairs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
