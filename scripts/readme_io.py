"""What the README generators (readme_results.py, real_results.py) share: one-line errors, the marked block, the grid."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from PIL import Image

from defectcam.io import atomic_path, write_text


def fail(prog: str, message: str) -> NoReturn:
    """One line on stderr and exit code 2, the project's way with bad input."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def split_block(prog: str, readme: Path, start: str, end: str) -> tuple[str, str, str]:
    """The README's text before `start`, between the markers and after `end` (the markers themselves dropped)."""
    text = readme.read_text()
    if start not in text or end not in text:
        fail(prog, f"{readme} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    old, tail = rest.split(end, 1)
    return head, old, tail


def save_grid(source: Path, target: Path) -> None:
    """A 256-colour copy of a figure, written atomically: the grid reads the same at a fraction of the size."""
    with Image.open(source) as image, atomic_path(target) as tmp:
        image.convert("RGB").quantize(colors=256).save(tmp, format="PNG", optimize=True)


def write_block(readme: Path, head: str, block: str, tail: str) -> None:
    """The README with `block` (markers included) in place of the old one, written atomically."""
    write_text(readme, head + block + tail)
