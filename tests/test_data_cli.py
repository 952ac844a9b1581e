"""defectcam-data through the console script: a valid tree is indexed; bad input is one line, exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from dagm_tree import write_png


def data_cli(root: Path, out: Path, *extra: str):
    return run_cli("data", "data=dagm", f"data.root={root}", "data.problems=[1]", "data.image_size=32", f"paths.output_dir={out}", *extra)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_valid_tree_is_indexed_split_and_cached(dagm_root: Path, tmp_path: Path) -> None:
    result = data_cli(dagm_root, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    problem = tmp_path / "out" / "problem_1"
    assert (problem / "split.csv").is_file() and (problem / "split.json").is_file()
    assert (problem / "cache" / "images_32.npy").is_file() and (tmp_path / "out" / "data_summary.json").is_file()


@pytest.mark.parametrize(
    ("break_tree", "fragments"),
    [
        (lambda root: (root / "Class1" / "Test" / "0005.PNG").write_bytes(b"not a png"), ["0005.PNG", "cannot decode"]),
        (lambda root: write_png(root / "Class1" / "Test" / "Label" / "0001_label.PNG", np.zeros((16, 16))), ["0001_label.PNG", "mask is 16x16"]),
        (lambda root: (root / "Class1" / "Train" / "Label" / "Labels.txt").write_text("Class1\n"), ["Train/Label/Labels.txt", "no label rows"]),
    ],
    ids=["corrupt-png", "mask-size", "empty-labels"],
)
def test_bad_input_is_one_line_exit_2(dagm_root: Path, tmp_path: Path, break_tree, fragments: list[str]) -> None:
    break_tree(dagm_root)
    out = tmp_path / "out"
    assert_one_line_error(data_cli(dagm_root, out), *fragments)
    # Nothing half-written: no split or cache for the broken problem.
    assert not list(out.glob("problem_1/cache/*.npy"))


def test_missing_root_and_bad_config_values(tmp_path: Path) -> None:
    assert_one_line_error(data_cli(tmp_path / "absent", tmp_path / "out"), "absent: DAGM root folder does not exist")
    assert_one_line_error(run_cli("data", "data.split=bogus"), "data.split", "bogus", "official, paper")
    assert_one_line_error(run_cli("data", "data=nope"), "data/nope")
    assert_one_line_error(run_cli("data", "no_such_key=1"), "no_such_key")


def test_full_error_env_gives_traceback(tmp_path: Path) -> None:
    result = run_cli("data", "data=dagm", f"data.root={tmp_path / 'absent'}", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
