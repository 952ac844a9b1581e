"""Copy a DAGM 2007 tree with only some images of a split: the tree the README's real-data numbers were measured on.

The README's problem-1 numbers score the release's Test images 0001-0287 only (the rest was held back to check the
claims). The same command on the whole release tests on all 575 Test images, and the numbers differ. This copies
the chosen problems with every Train image and the Test images whose file number (0001.PNG is 1) lies in the
range, with their masks and their rows of Labels.txt; the Labels.txt lines kept (header included) are byte for
byte the release's, so the copy indexes as the release does:

    python scripts/dagm_subset.py /data/DAGM /data/DAGM_1_287 --problems 1 --test-ids 1-287

The source is indexed first, as the data stage indexes it; the copy is built beside the destination and renamed
into place when complete, so a failed run leaves nothing behind. Exit 0 when done, 2 (one line on stderr) on bad
input, an existing destination or a missing parent folder.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from defectcam.data.dagm import SPLITS, index_dagm, labels_file
from defectcam.data.labels import parse_labels
from defectcam.errors import DefectcamError
from defectcam.io import temp_dir

BOM = "\ufeff".encode()


class SubsetError(Exception):
    """Bad input for this script: one line, exit 2."""


@dataclass(frozen=True)
class IdRange:
    """Image file numbers FIRST..LAST, both included, as the user wrote them."""

    first: int
    last: int

    def __contains__(self, number: int) -> bool:
        return self.first <= number <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def id_range(text: str) -> IdRange:
    """'1-287' -> 1..287; a single '5' is one number."""
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if match is None:
        raise SubsetError(f"id range {text!r}: expected FIRST-LAST, e.g. 1-287")
    ids = IdRange(int(match[1]), int(match[2] or match[1]))
    if ids.last < ids.first:
        raise SubsetError(f"id range {text!r}: LAST is below FIRST")
    return ids


def kept_rows(rows: pd.DataFrame, ids: IdRange | None) -> pd.DataFrame:
    """The rows (of one split of index_dagm's table) whose image file number is in `ids`; all with `ids` None."""
    if ids is None:
        return rows
    numbers = rows["image_path"].map(lambda path: int(re.sub(r"\D", "", Path(path).stem) or -1))
    return rows[numbers.map(lambda number: number in ids)]


def copy_split(source: Path, building: Path, problem: int, split: str, rows: pd.DataFrame) -> None:
    """The kept rows' images, masks and Labels.txt lines (the header and blank lines too), paths as in the source."""
    labels = labels_file(source, problem, split)
    kept_images = {Path(path).name.lower() for path in rows["image_path"]}
    row_lines = {row.line_number: row.image_name.lower() for row in parse_labels(labels)}
    raw = labels.read_bytes()
    lines = raw.removeprefix(BOM).decode("utf-8").splitlines(keepends=True)
    # the loader numbers lines as str.splitlines does, from 1: a line it did not read as a row is kept as it is
    text = "".join(line for number, line in enumerate(lines, start=1)
                   if number not in row_lines or row_lines[number] in kept_images)
    target = building / labels.relative_to(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((BOM if raw.startswith(BOM) else b"") + text.encode("utf-8"))
    for path in [*rows["image_path"], *rows["mask_path"].dropna()]:
        copied = building / Path(path).relative_to(source)
        copied.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copied)


def make_subset(source: Path, destination: Path, problems: list[int], ids: dict[str, IdRange | None]) -> pd.DataFrame:
    """Copy `problems` of the DAGM tree `source` to `destination`, each split limited to its `ids` (None: all); returns
    the copy's index (index_dagm's table, paths under the building folder it was renamed from)."""
    table = index_dagm(source, problems)  # a malformed source stops here, with the loader's own line
    if not destination.parent.is_dir():
        raise SubsetError(f"{destination.parent}: folder does not exist")
    try:
        destination.mkdir()  # claims the name: a second run or another program cannot take it meanwhile
    except FileExistsError:
        raise SubsetError(f"{destination}: already exists; choose a new folder") from None
    building = temp_dir(destination.parent, prefix=f".{destination.name}.")
    try:
        for (problem, split), rows in table.groupby(["problem", "split"], sort=True):
            kept = kept_rows(rows, ids[str(split)])
            if kept.empty:
                raise SubsetError(f"{source}/Class{problem}/{split}: no image numbered in {ids[str(split)]}")
            copy_split(source, building, int(problem), str(split), kept)
        copied = index_dagm(building, problems)  # the copy must index as a release tree does
        os.replace(building, destination)  # over the empty folder claimed above
        return copied
    except BaseException:
        if destination.is_dir() and not any(destination.iterdir()):  # still the empty folder claimed above
            destination.rmdir()
        raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--problems", type=int, nargs="+", required=True)
    for split in SPLITS:
        parser.add_argument(f"--{split.lower()}-ids", help=f"FIRST-LAST: the {split} image numbers to keep (default all)")
    args = parser.parse_args()
    problems = sorted(set(args.problems))
    try:
        ids = {split: None if (text := getattr(args, f"{split.lower()}_ids")) is None else id_range(text) for split in SPLITS}
        table = make_subset(args.source, args.destination, problems, ids)
    except (SubsetError, DefectcamError) as error:
        print(f"dagm_subset: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"dagm_subset: error: {error.filename or args.destination}: {error.strerror or error}", file=sys.stderr)
        return 2
    for (problem, split), group in table.groupby(["problem", "split"]):
        print(f"Class{problem}/{split}: {len(group)} images, {int(group['label'].sum())} defective")
    return 0


if __name__ == "__main__":
    sys.exit(main())
