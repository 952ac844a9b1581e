"""The documents the code and README cite live in the repository's own docs/ (nothing outside it is cited)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*ROOT.glob("src/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("conf/**/*.yaml"),
           ROOT / "README.md"]
EVERYTHING = [*SOURCES, *ROOT.glob("tests/*.py"), *ROOT.glob("docs/*.md"), *ROOT.glob("benchmarks/*.md"), ROOT / "Makefile",
              ROOT / "pyproject.toml", *ROOT.glob(".ci/*")]


def test_every_cited_doc_exists() -> None:
    cited = {match for path in SOURCES for match in re.findall(r"docs/[\w-]+\.md", path.read_text())}
    assert {"docs/cam_math.md", "docs/localization.md", "docs/dagm_format.md"} <= cited
    assert [doc for doc in sorted(cited) if not (ROOT / doc).is_file()] == []


def test_nothing_cites_the_shared_folder() -> None:
    shared = "../" + "shared"  # spelled in two parts so that this file does not cite it either
    assert [str(path) for path in EVERYTHING if path.is_file() and shared in path.read_text()] == []
