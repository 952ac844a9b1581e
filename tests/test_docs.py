"""The documents the code and README cite live in the repository's own docs/ (nothing outside it is cited)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*ROOT.glob("src/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("conf/**/*.yaml"),
           ROOT / "README.md"]


def test_every_cited_doc_exists() -> None:
    cited = {match for path in SOURCES for match in re.findall(r"docs/[\w-]+\.md", path.read_text())}
    assert {"docs/cam_math.md", "docs/localization.md", "docs/dagm_format.md"} <= cited
    assert [doc for doc in sorted(cited) if not (ROOT / doc).is_file()] == []


def test_nothing_cites_the_shared_folder() -> None:
    assert [str(path) for path in SOURCES if "../shared" in path.read_text()] == []
