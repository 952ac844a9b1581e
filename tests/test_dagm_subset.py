"""scripts/dagm_subset.py: the tree the README's real-data numbers were measured on, cut from a whole release."""

from __future__ import annotations

from pathlib import Path

from conftest import run_script
from dagm_tree import make_split, make_tree
from defectcam.data.dagm import index_dagm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dagm_subset.py"
BOM = "\ufeff".encode()


def test_the_copy_keeps_the_images_numbered_in_range_with_their_masks_and_rows(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "DAGM", problems=(1, 2))
    make_split(source / "Class1" / "Test", 1, 1, 20, {0, 4, 8, 12, 16}, line_end="\r\n", bom=True)  # the release's quirks
    result = run_script(SCRIPT, str(source), str(tmp_path / "cut"), "--problems", "1", "1", "--test-ids", "3-10",
                        "--train-ids", "25-30")
    assert result.returncode == 0, result.stderr[-2000:]
    whole, cut = index_dagm(source, [1]), index_dagm(tmp_path / "cut")
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["Class1"]  # problem 2 was not asked for
    # Train files 0021-0040 are rows 1-20 of their Labels.txt: the range counts file numbers, not row indices
    assert sorted(cut[cut.split == "Train"].image_id) == [f"Class1/Train/{number:04d}" for number in range(25, 31)]
    assert sorted(cut[cut.split == "Test"].image_id) == [f"Class1/Test/{number:04d}" for number in range(3, 11)]
    assert int(cut[cut.split == "Test"].label.sum()) == 2  # 0005 and 0009 (offsets 4 and 8) are the defective ones
    assert int(cut[cut.split == "Train"].label.sum()) == 2  # 0025 and 0029
    assert set(whole.image_id) >= set(cut.image_id)
    for path in cut.image_path.tolist() + cut.mask_path.dropna().tolist():
        original = source / Path(path).relative_to(tmp_path / "cut")
        assert Path(path).read_bytes() == original.read_bytes()
    labels = (tmp_path / "cut" / "Class1" / "Test" / "Label" / "Labels.txt").read_bytes()
    release = (source / "Class1" / "Test" / "Label" / "Labels.txt").read_bytes().split(b"\r\n")
    assert labels.split(b"\r\n") == [release[0], *release[3:11], b""]  # BOM + header, rows 3-10, each byte for byte
    assert labels.startswith(BOM)
    assert "Class1/Test: 8 images, 2 defective" in result.stdout and "Class1/Train: 6 images, 2 defective" in result.stdout


def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "DAGM")
    (tmp_path / "taken").mkdir()
    cases = {
        "missing source": ([str(tmp_path / "nowhere"), str(tmp_path / "a")], "nowhere"),
        "existing destination": ([str(source), str(tmp_path / "taken")], "already exists"),
        "missing parent": ([str(source), str(tmp_path / "no" / "such")], "folder does not exist"),
        "empty range": ([str(source), str(tmp_path / "b"), "--test-ids", "500-600"], "no image numbered in 500-600"),
        "bad range": ([str(source), str(tmp_path / "c"), "--test-ids", "9-3"], "LAST is below FIRST"),
        "blank range": ([str(source), str(tmp_path / "d"), "--test-ids", ""], "expected FIRST-LAST"),
    }
    for name, (args, message) in cases.items():
        result = run_script(SCRIPT, *args, "--problems", "1")
        assert result.returncode == 2, name
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("dagm_subset: error: ") and message in line, (name, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DAGM", "taken"]
