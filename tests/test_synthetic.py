"""Tests of the synthetic DAGM generator: layout, determinism, labels, atomicity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectcam.data import synthetic
from defectcam.data.synthetic import (
    PROBLEMS,
    SPEC_FILE,
    SyntheticSpec,
    defect_count,
    generate_synthetic_dagm,
    read_spec,
    render_sample,
)
from defectcam.errors import ConfigError, DatasetError

TINY = SyntheticSpec(image_size=64, n_train=12, n_test=8)
ROW = re.compile(r"^(\d+)\t([01])\t(\d{4}\.PNG)\t0\t(\d{4}_label\.PNG|0)$")


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated tiny tree shared by the read-only tests."""
    return generate_synthetic_dagm(tmp_path_factory.mktemp("tiny") / "dagm", TINY)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _entries(folder: Path) -> list[str]:
    """Names in `folder`, without the generator's lock files (they stay, empty, beside each root)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _labels(split_dir: Path) -> list[tuple[int, str, str]]:
    """(flag, image name, mask name) rows of a split's Labels.txt, checking the row format."""
    text = (split_dir / "Label" / "Labels.txt").read_bytes().decode("utf-8")
    assert "\r" not in text and text.endswith("\n")
    header, *rows = text.splitlines()
    assert not ROW.match(header)
    parsed = []
    for i, row in enumerate(rows, start=1):
        match = ROW.match(row)
        assert match, row
        assert int(match[1]) == i
        parsed.append((int(match[2]), match[3], match[4]))
    return parsed


@pytest.mark.parametrize("split, numbers", [("Test", range(1, 9)), ("Train", range(9, 21))])
def test_layout_names_and_labels(tiny_tree: Path, split: str, numbers: range) -> None:
    """Exactly the DAGM file names, one Labels.txt row per image, masks only for defective rows."""
    assert sorted(p.name for p in tiny_tree.iterdir()) == sorted(
        [f"Class{p}" for p in TINY.problems] + [SPEC_FILE]
    )
    for problem in TINY.problems:
        folder = tiny_tree / f"Class{problem}" / split
        rows = _labels(folder)
        images = sorted(p.name for p in folder.iterdir() if p.is_file())
        assert images == [f"{n:04d}.PNG" for n in numbers] == [r[1] for r in rows]
        masks = sorted(p.name for p in (folder / "Label").iterdir() if p.name != "Labels.txt")
        assert masks == sorted(f"{r[1][:4]}_label.PNG" for r in rows if r[0] == 1)
        assert all(r[2] == (f"{r[1][:4]}_label.PNG" if r[0] else "0") for r in rows)
        assert sum(r[0] for r in rows) == defect_count(len(numbers), TINY.defect_fraction)


def test_images_and_masks_format(tiny_tree: Path) -> None:
    """Images are 8-bit grey at image_size; masks match in size and hold only 0 and 255."""
    for path in tiny_tree.rglob("*.PNG"):
        with Image.open(path) as im:
            assert im.mode == "L" and im.size == (TINY.image_size, TINY.image_size)
            if path.name.endswith("_label.PNG"):
                values = set(np.unique(np.asarray(im)).tolist())
                assert values == {0, 255}


def test_defect_count() -> None:
    """round(fraction * n), at least one when n >= 2."""
    assert defect_count(100, 0.3) == 30
    assert defect_count(8, 0.3) == 2
    assert defect_count(2, 0.1) == 1
    assert defect_count(1, 0.3) == 0
    assert defect_count(10, 0.0) == 0


def test_deterministic_and_seed_dependent(tmp_path: Path, tiny_tree: Path) -> None:
    """Same spec gives byte-identical files; another seed gives other images."""
    spec = SyntheticSpec(problems=(1, 2), image_size=64, n_train=6, n_test=4)
    a = _files(generate_synthetic_dagm(tmp_path / "a", spec))
    b = _files(generate_synthetic_dagm(tmp_path / "b", spec))
    assert a == b
    c = _files(generate_synthetic_dagm(tmp_path / "c", SyntheticSpec(**{**vars(spec), "seed": 1})))
    assert a["Class1/Test/0001.PNG"] != c["Class1/Test/0001.PNG"]


def test_problems_are_independent(tmp_path: Path, tiny_tree: Path) -> None:
    """Problem 2's files do not depend on which other problems are generated."""
    alone = SyntheticSpec(**{**vars(TINY), "problems": (2,)})
    only = _files(generate_synthetic_dagm(tmp_path / "only2", alone))
    full = _files(tiny_tree)
    class2 = {k: v for k, v in only.items() if k.startswith("Class2/")}
    assert class2 and all(full[k] == v for k, v in class2.items())


def test_parallel_output_matches_serial(tmp_path: Path) -> None:
    """Worker processes change nothing in the output."""
    spec = SyntheticSpec(problems=(3,), image_size=64, n_train=30, n_test=30)
    serial = _files(generate_synthetic_dagm(tmp_path / "serial", spec, workers=1))
    parallel = _files(generate_synthetic_dagm(tmp_path / "parallel", spec, workers=2))
    assert serial == parallel


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("size", [64, 128])
def test_defect_inside_its_ellipse(problem: int, size: int) -> None:
    """Every changed pixel lies inside the mask; the defect spans enough pixels to be seen."""
    for number in range(1, 7):
        sample = render_sample(problem, size, 0, 0, number, defective=True)
        assert sample.mask is not None and sample.ellipse is not None
        changed = np.abs(sample.image.astype(int) - sample.clean) > 0
        assert not (changed & (sample.mask == 0)).any()
        rows, cols = np.nonzero(np.abs(sample.image.astype(int) - sample.clean) >= 8)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 0.08 * size
        area = (sample.mask > 0).mean()
        assert 0.015 <= area <= 0.13, area


@pytest.mark.parametrize("problem", [1, 2, 3, 4, 5, 6])
def test_ellipses_spread_over_the_image(problem: int) -> None:
    """Centres cover the image and a centred ellipse rarely overlaps the label."""
    centres, hits = [], 0
    for number in range(1, 41):
        sample = render_sample(problem, 64, 0, 1, number, defective=True)
        assert sample.ellipse is not None and sample.mask is not None
        centres.append((sample.ellipse.cx, sample.ellipse.cy))
        hits += bool(sample.mask[32, 32])
    cx, cy = np.array(centres).T
    for c in (cx, cy):
        assert c.min() < 0.3 and c.max() > 0.7 and 0.35 < np.median(c) < 0.65
    assert hits <= 12


def test_defect_free_and_deviating_samples() -> None:
    """Defect-free samples carry no mask; a deviation changes the image but adds no label."""
    plain = render_sample(2, 64, 0, 0, 5, defective=False)
    deviating = render_sample(2, 64, 0, 0, 5, defective=False, deviation=True)
    assert plain.mask is None and deviating.mask is None
    assert (plain.image == plain.clean).all()
    assert (plain.image != deviating.image).any()


def test_contrast_scales_defects() -> None:
    """A higher contrast gives a stronger change inside the label."""
    def strength(contrast: float) -> float:
        s = render_sample(5, 64, 0, 0, 3, defective=True, contrast=contrast)
        return float(np.abs(s.image.astype(int) - s.clean).sum())

    assert strength(0.5) < strength(1.0) < strength(2.0)


def test_full_size_and_competition_problems() -> None:
    """512 px (DAGM's size) and problems 7-10 render."""
    for problem in (1, 7, 8, 9, 10):
        sample = render_sample(problem, 512 if problem == 1 else 96, 0, 0, 1, defective=True)
        assert sample.mask is not None and sample.mask.shape == sample.image.shape


def test_skips_when_spec_matches(tmp_path: Path) -> None:
    """An equal spec at root is reused untouched."""
    spec = SyntheticSpec(problems=(4,), image_size=32, n_train=4, n_test=2)
    root = generate_synthetic_dagm(tmp_path / "d", spec)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_synthetic_dagm(root, SyntheticSpec(**{**vars(spec), "problems": [4]})) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    assert read_spec(root) == spec


def test_regenerates_when_spec_differs(tmp_path: Path) -> None:
    """Another spec replaces the tree; nothing is left beside it."""
    spec = SyntheticSpec(problems=(4,), image_size=32, n_train=4, n_test=2)
    root = generate_synthetic_dagm(tmp_path / "d", spec)
    other = SyntheticSpec(problems=(5,), image_size=32, n_train=3, n_test=2)
    generate_synthetic_dagm(root, other)
    assert read_spec(root) == other
    assert sorted(p.name for p in root.iterdir()) == ["Class5", SPEC_FILE]
    assert json.loads((root / SPEC_FILE).read_text())["problems"] == [5]
    assert _entries(tmp_path) == ["d"]


def test_failure_leaves_no_half_written_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash mid-way leaves neither a partial root nor temp folders; an older tree survives."""
    calls = {"n": 0}
    real = synthetic.render_sample

    def flaky(*args: object, **kwargs: object) -> synthetic.Sample:
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    spec = SyntheticSpec(problems=(1, 2), image_size=32, n_train=4, n_test=2)
    old = SyntheticSpec(problems=(3,), image_size=32, n_train=2, n_test=2)
    generate_synthetic_dagm(tmp_path / "kept", old)
    monkeypatch.setattr(synthetic, "render_sample", flaky)
    for name in ("fresh", "kept"):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="disk full"):
            generate_synthetic_dagm(tmp_path / name, spec, workers=1)
    assert not (tmp_path / "fresh").exists()
    assert read_spec(tmp_path / "kept") == old
    assert _entries(tmp_path) == ["kept"]


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    """A non-empty folder without a spec file (say, the real DAGM) is never replaced."""
    root = tmp_path / "DAGM"
    (root / "Class1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="not a synthetic"):
        generate_synthetic_dagm(root, TINY)
    assert (root / "Class1").is_dir()


@pytest.mark.parametrize(
    "change",
    [
        {"problems": (11,)},
        {"problems": ()},
        {"problems": (1, 1)},
        {"image_size": 16},
        {"n_test": 0},
        {"defect_fraction": 1.5},
        {"contrast": 0.0},
        {"seed": -1},
    ],
)
def test_invalid_spec_is_a_config_error(tmp_path: Path, change: dict[str, object]) -> None:
    """Specs the generator cannot honour are rejected before anything is written."""
    with pytest.raises(ConfigError):
        generate_synthetic_dagm(tmp_path / "x", SyntheticSpec(**{**vars(TINY), **change}))
    assert not (tmp_path / "x").exists()
