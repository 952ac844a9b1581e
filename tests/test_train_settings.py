"""A training resumes from last.ckpt only with the settings it was started with (issue 11); devices count."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_overrides
from defectcam.errors import ConfigError
from defectcam.models.checkpoints import SETTINGS_KEY
from defectcam.stages.settings import classifier_change, hydra_value, train_signature
from defectcam.stages.train import check_signature, flatten


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """Overrides of a tiny training and its last.ckpt, left as a killed run leaves them (no train_summary.json)."""
    base = tmp_path_factory.mktemp("unfinished")
    overrides = tiny_overrides(base / "syn", base / "out", "[1]")
    result = run_cli("train", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    (base / "out" / "problem_1" / "train_summary.json").unlink()
    return overrides, base / "out" / "problem_1" / "checkpoints" / "last.ckpt"


def _with_output_dir(overrides: list[str], out: Path) -> list[str]:
    """The same run (same generated data) written to another output folder."""
    return [o for o in overrides if not o.startswith("paths.output_dir=")] + [f"paths.output_dir={out}"]


def test_last_checkpoint_stores_the_settings(unfinished, compose_cfg) -> None:
    overrides, last = unfinished
    stored = torch.load(last, map_location="cpu", weights_only=True)[SETTINGS_KEY]
    assert stored == train_signature(compose_cfg(*overrides))
    assert stored["trainer.devices"] == 1 and stored["trainer.strategy"] == "auto"


def _refusal(last: Path, key: str, new: object) -> str:
    """The words a refusal must hold: the setting as last.ckpt recorded it and as this run asks it."""
    stored = flatten(torch.load(last, map_location="cpu", weights_only=True)[SETTINGS_KEY])
    assert stored[key] != new, f"{key}: pick a value other than the default for this test"
    return f"{key}={stored[key]!r}, this run asks {new!r}"


@pytest.mark.parametrize(
    ("key", "new"),
    [
        ("optim.optimizer.lr", 0.0123),
        ("trainer.devices", 2),  # refused before Lightning would start two processes
    ],
)
def test_resume_with_another_setting_stops_with_one_line(unfinished, key: str, new: object) -> None:
    overrides, last = unfinished
    stamp, expected = last.stat().st_mtime_ns, _refusal(last, key, new)
    result = run_cli("train", *overrides, f"{key}={new}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert "train.force=true" in lines[0] and "last.ckpt" in lines[0]
    assert last.stat().st_mtime_ns == stamp  # nothing was resumed


def test_resume_with_the_same_settings_continues(unfinished) -> None:
    overrides, last = unfinished
    result = run_cli("train", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stdout + result.stderr
    assert (last.parent.parent / "train_summary.json").is_file()


def test_checkpoint_without_settings_is_refused(unfinished, tmp_path: Path) -> None:
    overrides = _with_output_dir(unfinished[0], tmp_path / "out")  # reuses the generated data
    last = tmp_path / "out" / "problem_1" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"epoch": 0, "state_dict": {}}, last)  # what an older defectcam wrote: no settings
    result = run_cli("train", *overrides)
    assert result.returncode == 2 and "records no training settings" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("key", "override", "new"),
    [
        ("trainer.max_epochs", "trainer.max_epochs=3", 3),
        ("data.augment", "data.augment=[jitter]", ["jitter"]),
        ("trainer.strategy", "trainer.strategy=ddp_spawn", "ddp_spawn"),
        ("trainer.num_nodes", "trainer.num_nodes=2", 2),
        ("train.early_stopping.patience", "train.early_stopping.patience=99", 99),
        ("train.monitor", "train.monitor=val/acc", "val/acc"),
        ("train.early_stopping.start_fraction", "train.early_stopping.start_fraction=0.9", 0.9),
    ],
)
def test_other_changed_settings_are_named(unfinished, key: str, override: str, new: object, compose_cfg) -> None:
    overrides, last = unfinished
    stored = torch.load(last, map_location="cpu", weights_only=True)[SETTINGS_KEY]
    with pytest.raises(ConfigError, match=re.escape(_refusal(last, key, new))):
        check_signature(last, stored, train_signature(compose_cfg(*overrides, override)), action="started with")


def test_changed_sampler_is_named(unfinished, compose_cfg) -> None:
    overrides, last = unfinished
    stored = torch.load(last, map_location="cpu", weights_only=True)[SETTINGS_KEY]
    other = "none" if stored["data.sampler"] == "balanced" else "balanced"
    with pytest.raises(ConfigError, match=re.escape(_refusal(last, "data.sampler", other))):
        check_signature(last, stored, train_signature(compose_cfg(*overrides, f"data.sampler={other}")))


def test_devices_nodes_strategy_and_recipe_are_settings(compose_cfg) -> None:
    keys = set(flatten(train_signature(compose_cfg())))
    assert {"trainer.devices", "trainer.num_nodes", "trainer.strategy", "data.sampler", "train.monitor",
            "train.early_stopping.monitor", "train.early_stopping.patience", "model.class_weights"} <= keys
    one, two = (train_signature(compose_cfg(f"trainer.devices={n}")) for n in (1, 2))
    with pytest.raises(ConfigError, match=r"trainer.devices=1, this run asks 2; use train.force=true"):
        check_signature(Path("train_summary.json"), one, two)


def test_a_nested_setting_is_named_by_its_full_key() -> None:
    recorded = {"optim": {"optimizer": {"lr": 0.001, "weight_decay": 0.0}}, "seed": 0}
    wanted = {"optim": {"optimizer": {"lr": 0.001, "weight_decay": 0.1}}, "seed": 0}
    with pytest.raises(ConfigError, match=r"optim.optimizer.weight_decay=0.0, this run asks 0.1"):
        check_signature(Path("last.ckpt"), recorded, wanted, action="started with", retry="start over")
    check_signature(Path("last.ckpt"), wanted, wanted)  # equal: no error


def test_stages_after_training_ignore_only_how_the_classifier_was_run(compose_cfg) -> None:
    # A model trained on two GPUs in bf16 is evaluated and explained on one device or the CPU; another seed,
    # recipe or input size is another classifier.
    trained = train_signature(compose_cfg())
    for runtime in ("trainer.devices=2", "trainer.num_nodes=2", "trainer.strategy=ddp", "trainer.precision=bf16-mixed"):
        assert classifier_change(trained, train_signature(compose_cfg(runtime))) is None, runtime
    assert classifier_change(trained, train_signature(compose_cfg("seed=7"))) == ("seed", 0, 7)
    assert classifier_change(trained, train_signature(compose_cfg("data.image_size=64")))[0] == "data.image_size"
    assert classifier_change(trained, train_signature(compose_cfg("optim.optimizer.lr=0.5")))[:2] == ("optim.optimizer.lr", 0.001)

    # only the record's keys count (a summary of an older defectcam lacks the newer ones); a group replaced whole
    # is named by its own key
    older = {key: value for key, value in trained.items() if key != "train.early_stopping"}
    assert classifier_change(older, train_signature(compose_cfg("train.early_stopping.patience=99"))) is None
    quick = train_signature(compose_cfg("experiment=quick"))
    assert classifier_change(quick, train_signature(compose_cfg("experiment=quick", "optim.scheduler=null")))[0] == "optim.scheduler"


@pytest.mark.parametrize(("key", "value"), [("model.class_weights", None), ("model.class_weights", [1.0, 5.0]),
                                            ("data.augment", ["flips", "rot90"]), ("data.augment", []),
                                            ("seed", 7), ("train.monitor", "val/auc"), ("model.arch", "resnet18")])
def test_the_refusal_offers_an_override_hydra_reads_back(compose_cfg, key: str, value: object) -> None:
    from omegaconf import OmegaConf

    override = f"{key}={hydra_value(value)}"
    assert " " not in override  # one shell word
    read = OmegaConf.select(compose_cfg(override), key)  # Hydra's own parser is the oracle
    assert (OmegaConf.to_container(read) if OmegaConf.is_config(read) else read) == value


def test_text_that_hydra_would_read_as_another_type_is_quoted() -> None:
    assert hydra_value("0.001") == "'0.001'" and hydra_value("null") == "'null'" and hydra_value("a b") == "'a b'"
    assert hydra_value({"_target_": "x"}) is None  # a group is not one override: the message names it instead
