"""defectcam-data through the console script: a valid tree is indexed; bad input is one line, exit code 2."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from dagm_tree import write_png
from defectcam.stages import data as data_stage


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
        (lambda root: write_png(root / "Class1" / "Test" / "Label" / "0005_label.PNG", np.zeros((32, 32))),
         ["Test/Label/0005_label.PNG: mask of defective image 0005.PNG has no defect pixel"]),
    ],
    ids=["corrupt-png", "mask-size", "empty-labels", "empty-mask"],
)
def test_bad_input_is_one_line_exit_2(dagm_root: Path, tmp_path: Path, break_tree, fragments: list[str]) -> None:
    break_tree(dagm_root)
    out = tmp_path / "out"
    assert_one_line_error(data_cli(dagm_root, out), *fragments)
    # Nothing half-written: no split or cache for the broken problem, so fixing the file is enough.
    assert not list(out.glob("problem_1/cache/*.npy"))
    assert not (out / "problem_1" / "split.csv").exists() and not (out / "problem_1" / "split.json").exists()


def test_missing_root_and_bad_config_values(tmp_path: Path) -> None:
    assert_one_line_error(data_cli(tmp_path / "absent", tmp_path / "out"), "absent: DAGM root folder does not exist")
    assert_one_line_error(run_cli("data", "data.split=bogus"), "data.split", "bogus", "official, paper")
    assert_one_line_error(run_cli("data", "data=nope"), "data/nope")
    assert_one_line_error(run_cli("data", "no_such_key=1"), "no_such_key")


def test_full_error_env_gives_traceback(tmp_path: Path) -> None:
    result = run_cli("data", "data=dagm", f"data.root={tmp_path / 'absent'}", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def run_in_process(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """defectcam-data's main() in this process (no start-up cost): exit code and stderr."""
    monkeypatch.setattr("sys.argv", ["defectcam-data", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        data_stage.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        # Hydra leaves its job log's FileHandler on the root logger; once this test's tmp_path is removed
        # (pytest's retention policy), the next test logging in this worker would fail to reopen it.
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
    return code, capsys.readouterr().err


def _unlink(*parts: str):
    return lambda root: root.joinpath(*parts).unlink()


def _rmtree(*parts: str):
    import shutil

    return lambda root: shutil.rmtree(root.joinpath(*parts))


EVERY_ERROR = {
    "class-missing": (lambda root: None, ["Class2: problem 2 folder is missing"], "data.problems=[1,2]"),
    "test-missing": (_rmtree("Class1", "Test"), ["Class1/Test: Test folder is missing"], None),
    "labels-missing": (_unlink("Class1", "Train", "Label", "Labels.txt"), ["Train/Label/Labels.txt: Labels.txt is missing"], None),
    "image-missing": (_unlink("Class1", "Train", "0023.PNG"), ["Train/0023.PNG: image listed in"], None),
    "mask-name-missing": (
        lambda root: (root / "Class1/Test/Label/Labels.txt").write_text("Class1\n1\t1\t0001.PNG\t0\t0\n"),
        ["Labels.txt:2: defective image 0001.PNG has no mask file name"], None),
    "mask-file-missing": (_unlink("Class1", "Test", "Label", "0005_label.PNG"), ["0005_label.PNG: mask listed in"], None),
    "mask-unclaimed": (lambda root: write_png(root / "Class1/Test/Label/0002_label.PNG", np.zeros((32, 32))),
                       ["0002_label.PNG: mask file that no row of Labels.txt claims"], None),
    "image-size-odd": (lambda root: write_png(root / "Class1/Test/0002.PNG", np.zeros((48, 48))),
                       ["Test/0002.PNG: image is 48x48 but 0021.PNG, the problem's first image, is 32x32"], None),
    "mask-undecodable": (lambda root: (root / "Class1/Test/Label/0001_label.PNG").write_bytes(b"\x89PNG broken"),
                         ["0001_label.PNG: cannot decode image"], None),
}


@pytest.mark.parametrize("case", EVERY_ERROR)
def test_every_dataset_error_is_one_line_exit_2(case: str, dagm_root: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    break_tree, fragments, extra = EVERY_ERROR[case]
    break_tree(dagm_root)
    args = ["data=dagm", f"data.root={dagm_root}", "data.problems=[1]", "data.image_size=32", f"paths.output_dir={tmp_path / 'out'}"]
    code, err = run_in_process(capsys, monkeypatch, *args, *([extra] if extra else []))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("defectcam-data: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
