"""Check a downloaded DAGM 2007 tree: layout, Labels.txt, and the per-split defect counts of the release.

    python scripts/check_dagm.py data/DAGM [--problems 1 2 3] [--decode]

Exit code 0 when the tree is complete and consistent, 2 (one line on stderr) when it is not.
"""

from __future__ import annotations

import argparse
import sys

from defectcam.data.dagm import index_dagm
from defectcam.data.images import read_gray, read_mask
from defectcam.errors import DefectcamError

# Defective images per split in the 10-class release (docs/dagm_format.md).
EXPECTED_DEFECTS = {
    "Train": {1: 79, 2: 66, 3: 66, 4: 82, 5: 70, 6: 83, 7: 150, 8: 150, 9: 150, 10: 150},
    "Test": {1: 71, 2: 84, 3: 84, 4: 68, 5: 80, 6: 67, 7: 150, 8: 150, 9: 150, 10: 150},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--problems", type=int, nargs="*")
    parser.add_argument("--decode", action="store_true", help="also decode every image and mask")
    args = parser.parse_args()
    try:
        table = index_dagm(args.root, args.problems)
        if args.decode:
            for image_path, mask_path in zip(table["image_path"], table["mask_path"]):
                image = read_gray(image_path)
                if isinstance(mask_path, str):
                    read_mask(mask_path, image.shape, image_path)
    except DefectcamError as exc:
        print(f"check_dagm: error: {exc}", file=sys.stderr)
        return 2
    counts = table.groupby(["problem", "split"])["label"].agg(["size", "sum"])
    mismatches = 0
    for (problem, split), row in counts.iterrows():
        expected = EXPECTED_DEFECTS[split].get(problem)
        flag = "" if expected in (None, row["sum"]) else f"  (release has {expected})"
        mismatches += bool(flag)
        print(f"Class{problem:<3} {split:5}  {row['size']:5d} images  {row['sum']:4d} defective{flag}")
    print(f"{len(table)} images indexed; {mismatches} split(s) differ from the release's defect counts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
