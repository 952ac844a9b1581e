"""Stages that cannot mislead: localize and report notice inputs made from another checkpoint or other settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from defectcam.models.loading import file_sha1


@pytest.fixture
def copy(pipeline, tmp_path: Path) -> tuple[Path, list[str]]:
    """A private copy of the tiny pipeline's outputs (problem 1 only), and the overrides that point at it."""
    out = tmp_path / "out"
    shutil.copytree(pipeline["out"], out, ignore=shutil.ignore_patterns("problem_2", "multirun", "hydra", "tensorboard"))
    overrides = [o for o in pipeline["overrides"] if not o.startswith(("paths.output_dir=", "data.problems="))]
    return out, [*overrides, f"paths.output_dir={out}", "data.problems=[1]"]


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def cams_sha1(out: Path) -> str:
    return json.loads((out / "problem_1" / "cams" / "cams_meta.json").read_text())["checkpoint_sha1"]


def test_localize_after_retraining_refreshes_or_names_the_stale_cam_cache(copy) -> None:
    out, overrides = copy
    overrides = [*overrides, "fullres.supervision=[]"]  # the CAM cache's story; a retrained decoder would only add time
    before = cams_sha1(out)
    trained = run_cli("train", *overrides, "train.force=true", "seed=7")
    assert trained.returncode == 0, trained.stderr[-2000:]
    now = file_sha1(out / "problem_1" / "checkpoints" / "best.ckpt")
    assert now != before
    refused = run_cli("localize", *overrides, "seed=7", "on_stale=error")
    line = one_line_error(refused)
    assert "cams.pt" in line and "defectcam-cams" in line and "best.ckpt changed" in line
    cams = run_cli("cams", *overrides, "seed=7")
    assert cams.returncode == 0, cams.stderr[-2000:]
    # The gate's decision threshold is evaluate's: a metrics.json of the old model is refused by name, too.
    assert "metrics.json" in one_line_error(run_cli("localize", *overrides, "seed=7", "on_stale=error"))
    refreshed = run_cli("localize", *overrides, "seed=7")
    assert refreshed.returncode == 0, refreshed.stderr[-2000:]
    assert cams_sha1(out) == now
    meta = json.loads((out / "problem_1" / "localization_meta.json").read_text())
    metrics = json.loads((out / "problem_1" / "metrics.json").read_text())
    assert meta["cams"]["checkpoint_sha1"] == now and metrics["key"]["checkpoint_sha1"] == now
    assert meta["decision_threshold"] == metrics["decision_threshold"]
    # and the report finds every input fresh now
    assert run_cli("report", *overrides, "seed=7", "on_stale=error").returncode == 0


def test_cam_cache_without_its_meta_is_not_trusted(copy) -> None:
    out, overrides = copy
    (out / "problem_1" / "cams" / "cams_meta.json").unlink()
    line = one_line_error(run_cli("localize", *overrides, "on_stale=error"))
    assert "meta file is missing" in line and "cams.pt" in line


def test_changed_cam_setting_makes_localize_recompute_the_cache(copy) -> None:
    out, overrides = copy
    changed = [*overrides, "cam.layers=[layer1,layer2]", "cam.fusions=null", "fullres.supervision=[]"]  # CAMs only
    line = one_line_error(run_cli("localize", *changed, "on_stale=error"))
    assert "layers was" in line
    result = run_cli("localize", *changed)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((out / "problem_1" / "cams" / "cams_meta.json").read_text())
    assert meta["layers"] == ["layer1", "layer2"]


def test_report_refuses_tables_of_other_localize_settings(copy) -> None:
    out, overrides = copy
    # n_thresholds changes the localization tables only (select_on would also make the decoder stale)
    line = one_line_error(run_cli("report", *overrides, "localize.n_thresholds=51", "on_stale=error"))
    assert "localization.csv" in line and "defectcam-localize" in line
