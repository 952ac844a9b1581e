"""scripts/dagm_subset.py: the tree the README's real-data numbers were measured on, cut from a whole release."""

from __future__ import annotations

from pathlib import Path

from conftest import run_script
from dagm_tree import make_split, make_tree
from defectcam.data.dagm import index_dagm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dagm_subset.py"


def test_the_copy_keeps_every_train_image_and_the_test_rows_in_range(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "DAGM", problems=(1, 2))
    make_split(source / "Class1" / "Test", 1, 1, 20, {0, 4, 8, 12, 16}, line_end="\r\n", bom=True)  # the release's quirks
    result = run_script(SCRIPT, str(source), str(tmp_path / "cut"), "--problems", "1", "--test-ids", "3-10")
    assert result.returncode == 0, result.stderr[-2000:]
    whole, cut = index_dagm(source, [1]), index_dagm(tmp_path / "cut")
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["Class1"]  # problem 2 was not asked for
    assert sorted(cut[cut.split == "Train"].image_id) == sorted(whole[whole.split == "Train"].image_id)
    kept = sorted(cut[cut.split == "Test"].image_id)
    assert kept == [f"Class1/Test/{number:04d}" for number in range(3, 11)]
    assert int(cut[cut.split == "Test"].label.sum()) == 2  # rows 5 and 9 (offsets 4 and 8) are the defective ones
    for path in cut.image_path.tolist() + cut.mask_path.dropna().tolist():
        original = source / Path(path).relative_to(tmp_path / "cut")
        assert Path(path).read_bytes() == original.read_bytes()
    labels = (tmp_path / "cut" / "Class1" / "Test" / "Label" / "Labels.txt").read_bytes()
    assert labels.startswith(b"Class1\r\n3\t0\t0003.PNG") and labels.count(b"\r\n") == 9  # header + 8 rows, as written
    assert "Class1/Test: 8 images, 2 defective" in result.stdout


def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "DAGM")
    (tmp_path / "taken").mkdir()
    cases = {
        "missing source": ([str(tmp_path / "nowhere"), str(tmp_path / "a")], "nowhere"),
        "existing destination": ([str(source), str(tmp_path / "taken")], "already exists"),
        "empty range": ([str(source), str(tmp_path / "b"), "--test-ids", "500-600"], "no Labels.txt row"),
        "bad range": ([str(source), str(tmp_path / "c"), "--test-ids", "9-3"], "LAST is below FIRST"),
    }
    for name, (args, message) in cases.items():
        result = run_script(SCRIPT, *args, "--problems", "1")
        assert result.returncode == 2, name
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("dagm_subset: error: ") and message in line, (name, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DAGM", "taken"]
