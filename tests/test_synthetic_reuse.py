"""The data stage shares one synthetic tree between runs on different subsets of problems."""

from __future__ import annotations

from pathlib import Path

from defectcam.data.synthetic import read_spec
from defectcam.stages.data import dataset_root


def test_subset_reuses_and_new_problem_extends(compose_cfg, tmp_path: Path) -> None:
    common = [f"data.root={tmp_path / 'syn'}", "data.synthetic.image_size=32", "data.synthetic.n_train=8", "data.synthetic.n_test=8"]
    root = dataset_root(compose_cfg(*common, "data.problems=[1,2]"))
    image = root / "Class2" / "Train" / "0009.PNG"
    stamp = image.stat().st_mtime_ns
    dataset_root(compose_cfg(*common, "data.problems=[1]"))  # a subset: nothing regenerated, nothing removed
    assert image.stat().st_mtime_ns == stamp and read_spec(root).problems == (1, 2)
    dataset_root(compose_cfg(*common, "data.problems=[3]"))  # a new problem: the tree is extended
    assert read_spec(root).problems == (1, 2, 3)
    assert image.read_bytes() and (root / "Class3" / "Test" / "0001.PNG").is_file()
