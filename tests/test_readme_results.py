"""scripts/readme_results.py: bad run folders stop with one line and exit 2, before the README or its grid is touched."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "readme_results.py"
README = ROOT / "README.md"
GRID = ROOT / "scripts" / "readme" / "quick_layercam_problem1.png"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script(SCRIPT, *args, timeout=300)


def snapshot() -> tuple[bytes, bytes | None]:
    return README.read_bytes(), GRID.read_bytes() if GRID.exists() else None


def test_missing_run_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    before = snapshot()
    result = run(str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"readme_results: error: {tmp_path / 'nowhere'} is not a finished run: it has no "
                                     "tables/classification.csv")
    assert snapshot() == before


def test_unreadable_tables_write_nothing(tmp_path: Path) -> None:
    for name in ("tables/classification.csv", "tables/localization.csv", "tables/localization_summary.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("problem\n1\n")
    (tmp_path / "data_summary.json").write_text('{"1": {"test": {"images": 4}}}')
    (tmp_path / "problem_1" / "figures").mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "problem_1" / "figures" / "cams_layercam.png")
    before = snapshot()
    result = run(str(tmp_path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"readme_results: error: {tmp_path}: its tables are not a finished run's (KeyError")
    assert snapshot() == before


def test_seeds_folder_without_runs_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run_folder = tmp_path / "run"
    for name in ("tables/classification.csv", "tables/localization.csv", "tables/localization_summary.csv", "data_summary.json",
                 "problem_1/figures/cams_layercam.png"):
        (run_folder / name).parent.mkdir(parents=True, exist_ok=True)
        (run_folder / name).write_text("x")
    before = snapshot()
    result = run(str(run_folder), "--seeds", f"2 threads={tmp_path / 'empty'}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"readme_results: error: {tmp_path / 'empty'} holds no finished seed_<k> folder"
    assert snapshot() == before


def test_finished_run_rewrites_only_the_block(pipeline: dict[str, object], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    grid = tmp_path / "scripts" / "readme" / "grid.png"
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "GRID", grid)
    readme = tmp_path / "README.md"
    readme.write_text(f"# head\n{script.START}\nstale block\n{script.END}\ntail\n")
    monkeypatch.setattr(sys, "argv", ["readme_results.py", str(pipeline["out"])])
    assert script.main() == 0
    text = readme.read_text()
    assert text.startswith(f"# head\n{script.START}\n## Results of the quick run") and text.endswith(f"{script.END}\ntail\n")
    assert "stale block" not in text and "![LayerCAM grid](scripts/readme/grid.png)" in text
    with Image.open(grid) as image:
        assert image.mode == "P"
    assert not list(grid.parent.glob(".*.tmp"))
