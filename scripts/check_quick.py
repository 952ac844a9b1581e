"""Check the quick experiment's acceptance criteria on its tables (run after `make reproduce`).

    python scripts/check_quick.py [outputs/quick]

1. every problem reaches test accuracy >= 0.9;
2. on every problem, LayerCAM's best layer (chosen by validation mIoU) beats every baseline's test mIoU
   by at least 0.10 (10 IoU points, the "clear margin" of docs/cam_math.md, "When a map is localizing").
Both on the rows comparable to the reference study: raw maps, no classifier gate, no post-process
(gate=none, postprocess=none). Prints one line per problem and exits 1 if any criterion fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

BASELINES = ("full_image", "centred_ellipse", "random")
MIN_ACCURACY, MIN_MARGIN = 0.9, 0.10


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/quick")
    if not (out / "tables" / "classification.csv").is_file():
        print(f"{out / 'tables' / 'classification.csv'}: no report tables; run make reproduce first", file=sys.stderr)
        return 2
    classification = pd.read_csv(out / "tables" / "classification.csv").set_index("problem")
    rows = []
    for problem_dir in sorted(out.glob("problem_*")):
        rows.append(pd.read_csv(problem_dir / "localization.csv"))
    table = pd.concat(rows)
    plain = (table["gate"] == "none") & (table["postprocess"] == "none")
    best = table[(table["selection"] == "val-best") & plain]
    failures = 0
    for problem, group in best.groupby("problem"):
        val = group[(group["split"] == "val") & (group["method"] == "layercam")]
        layer = val.sort_values("miou", ascending=False).iloc[0]["layer"]  # chosen on validation
        test = group[group["split"] == "test"].set_index(["method", "layer"])["miou"]
        layercam = test[("layercam", layer)]
        baseline = max(test[(name, "-")] for name in BASELINES)
        accuracy = classification.loc[problem, "accuracy"]
        ok = accuracy >= MIN_ACCURACY and layercam - baseline >= MIN_MARGIN
        failures += not ok
        print(f"problem {problem}: accuracy {accuracy:.3f}, LayerCAM {layer} test mIoU {layercam:.3f} "
              f"vs best baseline {baseline:.3f} (margin {layercam - baseline:+.3f}) {'ok' if ok else 'FAIL'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
