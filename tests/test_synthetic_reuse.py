"""The data stage shares one synthetic tree between runs on different subsets of problems."""

from __future__ import annotations

from pathlib import Path

from defectcam.data.synthetic import read_spec
from defectcam.stages.data import dataset_root


def test_subset_reuses_and_new_problem_extends(compose_cfg, tmp_path: Path) -> None:
    settings = ["data.synthetic.image_size=32", "data.synthetic.n_train=8", "data.synthetic.n_test=8"]
    common = [f"data.root={tmp_path / 'syn'}", *settings]
    root = dataset_root(compose_cfg(*common, "data.problems=[1,2]"))
    image = root / "Class2" / "Train" / "0009.PNG"
    stamp, inode = image.stat().st_mtime_ns, image.stat().st_ino
    dataset_root(compose_cfg(*common, "data.problems=[1]"))  # a subset: nothing regenerated, nothing removed
    assert image.stat().st_mtime_ns == stamp and read_spec(root).problems == (1, 2)
    dataset_root(compose_cfg(*common, "data.problems=[3]"))  # a new problem: the tree is extended in place
    assert read_spec(root).problems == (1, 2, 3)
    assert (root / "Class3" / "Test" / "0001.PNG").is_file()
    # The other problems' files are left alone, so a job reading them meanwhile is not disturbed.
    assert image.stat().st_mtime_ns == stamp and image.stat().st_ino == inode
    # And the extended tree is the tree a single run over all three problems would have generated.
    fresh = dataset_root(compose_cfg(*settings, "data.problems=[1,2,3]", f"data.root={tmp_path / 'fresh'}"))
    assert files(root) == files(fresh)


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
