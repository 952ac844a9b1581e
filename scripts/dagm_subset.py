"""Copy a DAGM 2007 tree with only some images of a split: the tree the README's real-data numbers were measured on.

The README's problem-1 numbers score the release's Test images 0001-0287 only (the rest was held back to check the
claims). With the whole release, `data.split=official` tests on all 575 Test images, and the numbers differ. This
copies the chosen problems with every Train image and the Test images whose Labels.txt index lies in the range,
each kept row of Labels.txt byte for byte (header included), so the copy indexes as the release does:

    python scripts/dagm_subset.py /data/DAGM /data/DAGM_test_0001_0287 --problems 1 --test-ids 1-287

The source is checked first (as the data stage would index it); the copy is built beside the destination and
renamed into place when complete, so a failed run leaves nothing behind. Exit 0 when done, 2 (one line on stderr)
on bad input or an existing destination.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from defectcam.data.dagm import SPLITS, index_dagm
from defectcam.errors import DefectcamError

_ROW = re.compile(r"^\s*(\d+)\s+[01]\s+")


class SubsetError(Exception):
    """Bad input for this script: one line, exit 2."""


def id_range(text: str) -> range:
    """'1-287' -> range(1, 288); a single '5' is the range of one index."""
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if match is None:
        raise SubsetError(f"id range {text!r}: expected FIRST-LAST, e.g. 1-287")
    first, last = int(match[1]), int(match[2] or match[1])
    if last < first:
        raise SubsetError(f"id range {text!r}: LAST is below FIRST")
    return range(first, last + 1)


def kept_lines(labels: Path, ids: range | None) -> tuple[list[str], list[str]]:
    """The lines of Labels.txt to keep (the header and the rows whose index is in `ids`; all with `ids` None),
    and the file names those rows name (images and masks)."""
    lines = labels.read_bytes().decode("utf-8-sig").splitlines(keepends=True)
    kept, files = [], []
    for line in lines:
        row = _ROW.match(line)
        if row is None:
            kept.append(line)  # the header, or a blank line: index_dagm has already accepted the file
            continue
        if ids is None or int(row[1]) in ids:
            kept.append(line)
            fields = line.split()
            files.extend(name for name in fields[2:5:2] if name != "0")
    return kept, files


def copy_split(source: Path, destination: Path, ids: range | None) -> int:
    """One ClassN/<split> folder: the kept rows' images and masks and their Labels.txt; returns the rows kept."""
    label_dir = next(p for p in source.iterdir() if p.is_dir() and p.name.lower() == "label")
    labels = next(p for p in label_dir.iterdir() if p.name.lower() == "labels.txt")
    lines, files = kept_lines(labels, ids)
    (destination / label_dir.name).mkdir(parents=True)
    (destination / label_dir.name / labels.name).write_text("".join(lines), encoding="utf-8", newline="")
    by_name = {p.name.lower(): p for folder in (source, label_dir) for p in folder.iterdir() if p.is_file()}
    for name in files:
        found = by_name[name.lower()]
        shutil.copy2(found, destination / found.relative_to(source))
    return sum(1 for line in lines if _ROW.match(line))


def make_subset(source: Path, destination: Path, problems: list[int], ids: dict[str, range | None]) -> None:
    """Copy `problems` of the DAGM tree `source` to `destination`, each split limited to its `ids` (None: all)."""
    if destination.exists():
        raise SubsetError(f"{destination}: already exists; choose a new folder")
    index_dagm(source, problems)  # a malformed source stops here, with index_dagm's own line
    destination.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        for problem in problems:
            class_dir = source / f"Class{problem}"
            for split in SPLITS:
                split_dir = next(p for p in class_dir.iterdir() if p.is_dir() and p.name.lower() == split.lower())
                rows = copy_split(split_dir, building / class_dir.name / split_dir.name, ids[split])
                if rows == 0:
                    raise SubsetError(f"{split_dir}: no Labels.txt row has an index in {ids[split]}")
        index_dagm(building, problems)  # the copy must index as a release tree does
        building.rename(destination)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--problems", type=int, nargs="+", required=True)
    parser.add_argument("--train-ids", help="FIRST-LAST: Train rows to keep (default all)")
    parser.add_argument("--test-ids", help="FIRST-LAST: Test rows to keep (default all)")
    args = parser.parse_args()
    try:
        ids = {"Train": args.train_ids and id_range(args.train_ids), "Test": args.test_ids and id_range(args.test_ids)}
        make_subset(args.source, args.destination, args.problems, ids)
    except (SubsetError, DefectcamError) as error:
        print(f"dagm_subset: error: {error}", file=sys.stderr)
        return 2
    table = index_dagm(args.destination, args.problems)
    for (problem, split), group in table.groupby(["problem", "split"]):
        print(f"Class{problem}/{split}: {len(group)} images, {int(group['label'].sum())} defective")
    return 0


if __name__ == "__main__":
    sys.exit(main())
