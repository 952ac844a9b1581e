"""Out-of-range sizes, counts and thresholds are one line naming the setting, exit code 2, before any file is
written; outputs are strict JSON and get the umask's permissions."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from defectcam.errors import ConfigError
from defectcam.io import finite_or_null, temp_dir
from defectcam.stages import predict as predict_stage
from defectcam.stages.settings import setting_change, validate
from defectcam.stages.train import check_train_settings

# (override, the exact one-line message)
BAD_SETTINGS = [
    ("predict.batch_size=0", "predict.batch_size: 0 must be an integer >= 1"),
    ("predict.batch_size=-1", "predict.batch_size: -1 must be an integer >= 1"),
    ("data.batch_size=0", "data.batch_size: 0 must be an integer >= 1"),
    ("data.eval_batch_size=0", "data.eval_batch_size: 0 must be an integer >= 1"),
    ("cam.batch_size=0", "cam.batch_size: 0 must be an integer >= 1"),
    ("data.num_workers=-1", "data.num_workers: -1 must be an integer >= 0"),
    ("cam.figure_images=-2", "cam.figure_images: -2 must be an integer >= 0"),
    ("data.image_size=0", "data.image_size: 0 must be an integer >= 32"),
    ("data.image_size=48.5", "data.image_size: 48.5 must be an integer >= 32"),
    ("seed=abc", "seed: 'abc' must be an integer in [0, 4294967295]"),
    ("data.split_seed=-1", "data.split_seed: -1 must be an integer in [0, 4294967295]"),
    ("localize.fixed_thresholds=[0.5,abc]", "localize.fixed_thresholds: 'abc' must be a number in [0, 1], the scoring maps' range"),
    ("localize.fixed_thresholds=[1.5]", "localize.fixed_thresholds: 1.5 must be a number in [0, 1], the scoring maps' range"),
    ("localize.fixed_thresholds=[nan]", "localize.fixed_thresholds: nan must be a number in [0, 1], the scoring maps' range"),
    ("localize.fixed_thresholds=0.5",
     "localize.fixed_thresholds: 0.5 must be a list of numbers in [0, 1], e.g. localize.fixed_thresholds=[0.5]"),
    ("localize.threshold=nan", "localize.threshold: nan must be a number in [0.0, 1.0]"),
    ("predict.postprocess=elipse", "predict.postprocess: 'elipse' is not one of none, ellipse"),
    ("predict.gate=always", "predict.gate: 'always' is not one of none, classifier"),
    ("predict.backend=tensorrt", "predict.backend: 'tensorrt' is not one of torch, onnx"),
]


@pytest.mark.parametrize(("override", "message"), BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_a_bad_size_count_or_threshold_is_one_line(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(override))
    assert str(info.value) == message


def test_the_edges_of_the_ranges_are_accepted(compose_cfg) -> None:
    validate(compose_cfg("data.image_size=32", "data.num_workers=0", "cam.figure_images=0", "predict.batch_size=1",
                         "localize.fixed_thresholds=[0,1]", "seed=4294967295"))
    validate(compose_cfg("localize.fixed_thresholds=[]"))  # no fixed-threshold rows: the protocol needs none


@pytest.mark.parametrize("epochs", ["0", "-1", "2.5"])
def test_max_epochs_below_one_is_refused(compose_cfg, epochs: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_train_settings(compose_cfg(f"trainer.max_epochs={epochs}"))
    assert str(info.value) == f"trainer.max_epochs: {epochs} must be an integer >= 1"


def _one_line(result, message: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [message]


def test_bad_settings_stop_the_cli_before_any_file_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = (f"paths.output_dir={out}", f"data.root={tmp_path / 'synthetic'}", "data.problems=[1]")
    # 0 epochs "finished" with no best.ckpt: evaluate then sent the user to train, which said it was done.
    _one_line(run_cli("train", *common, "trainer.max_epochs=0"), "defectcam-train: error: trainer.max_epochs: 0 must be an integer >= 1")
    # cv2 failed on the resize, after split.csv and split.json were written.
    _one_line(run_cli("data", *common, "data.image_size=0"), "defectcam-data: error: data.image_size: 0 must be an integer >= 32")
    _one_line(run_cli("predict", *common, f"predict.input={tmp_path}", f"predict.output={tmp_path / 'pred'}", "predict.batch_size=0"),
              "defectcam-predict: error: predict.batch_size: 0 must be an integer >= 1")
    assert not (tmp_path / "synthetic").exists() and not (tmp_path / "pred").exists()
    assert [p.name for p in out.iterdir()] == ["hydra"]  # only Hydra's own run log


def test_train_summary_numbers_are_strict_json() -> None:
    # val/auc is NaN when validation lacks a class; json.dumps would write NaN, which strict readers reject.
    summary = {"best_val_accuracy": 0.75, "best_val_loss": float("inf"), "best_val_auc": float("nan"),
               "normalization": [0.3, float("-inf")], "train_config": {"seed": 0}}
    safe = finite_or_null(summary)
    assert safe == {"best_val_accuracy": 0.75, "best_val_loss": None, "best_val_auc": None, "normalization": [0.3, None],
                    "train_config": {"seed": 0}}
    json.dumps(safe, allow_nan=False)


def test_a_missing_recorded_setting_reads_naturally() -> None:
    # cam_meta leaves tta out at its default (none): the message said "tta was None, now 'flips'".
    omitted = {"tta": "none"}
    assert setting_change({"tta": "flips"}, {"tta": "flips"}, omitted) is None
    assert setting_change({"format": 3}, {"format": 3, "tta": "flips"}, omitted) == ("tta", "tta was 'none', now 'flips'")
    # the other way round: a flips cache is stale for tta=none, whose meta has no tta
    assert setting_change({"format": 3, "tta": "flips"}, {"format": 3}, omitted) == ("tta", "tta was 'flips', now 'none'")
    assert setting_change({"format": 3}, {"format": 3, "parts": ["val"]}) == ("parts", "parts was not recorded, now ['val']")
    assert setting_change({"format": 3, "old": 1}, {"format": 3}) == ("old", "old was 1, now not set")


@pytest.fixture
def umask_027() -> Iterator[int]:
    """The process's umask set to 0o027 inside, restored after."""
    previous = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(previous)


def test_predict_output_folder_gets_the_umask_permissions(compose_cfg, tmp_path: Path, monkeypatch, umask_027: int) -> None:
    image = tmp_path / "new.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    target = tmp_path / "pred"
    # The folder handling only: each problem's predictions stubbed (no trained model needed).
    monkeypatch.setattr(predict_stage, "predict_problem", lambda cfg, problem, paths, work, predictor=None: ([{"image": str(paths[0])}], []))
    cfg = compose_cfg(f"paths.output_dir={tmp_path / 'out'}", "data.problems=[1]", f"predict.input={image}", f"predict.output={target}")
    predict_stage.run_predict(cfg)
    assert (target / "predictions.csv").is_file()
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask_027  # mkdtemp's 0o700 before
    assert temp_dir(tmp_path, prefix="x").stat().st_mode & 0o777 == 0o750  # the helper the synthetic tree uses too


@pytest.mark.parametrize("stage", ["evaluate", "cams", "fullres", "localize"])
def test_a_stage_after_training_names_the_untrained_problem_before_any_data_work(compose_cfg, tmp_path: Path,
                                                                                stage: str) -> None:
    """It once generated, split and cached every problem (38 MB for the synthetic six) before saying so."""
    import importlib

    from defectcam.errors import StageOrderError

    out = tmp_path / "out"
    cfg = compose_cfg(f"paths.output_dir={out}", f"data.root={tmp_path / 'data'}", "data.problems=[1,2]")
    run = getattr(importlib.import_module(f"defectcam.stages.{stage}"), f"run_{stage}")
    with pytest.raises(StageOrderError, match=r"problem_1/train_summary\.json: problem 1 has not finished training"):
        run(cfg)
    assert not out.exists() and not (tmp_path / "data").exists()
