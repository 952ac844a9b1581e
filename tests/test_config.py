"""Every experiment composes; unknown keys and values fail with a clear message."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from defectcam.errors import ConfigError
from defectcam.stages.settings import validate


@pytest.mark.parametrize("experiment", ["quick", "dagm_cpu", "paper", "official"])
def test_every_experiment_composes(compose_cfg, experiment: str) -> None:
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    validate(cfg)
    assert cfg.experiment_name == experiment
    assert cfg.paths.output_dir.endswith(f"outputs/{experiment}")


def test_quick_is_the_default_and_cpu_sized(compose_cfg) -> None:
    cfg = compose_cfg()
    assert cfg.experiment_name == "quick" and cfg.data.name == "synthetic" and cfg.trainer.accelerator == "cpu"
    assert cfg.model.arch == "resnet50" and cfg.model.weights == "none" and list(cfg.data.problems) == [1, 2, 3, 4, 5, 6]


def test_paper_has_the_study_settings(compose_cfg) -> None:
    cfg = compose_cfg("experiment=paper")
    assert cfg.data.split == "paper" and cfg.data.image_size == 512 and not cfg.data.augment
    assert cfg.optim.optimizer._target_ == "torch.optim.SGD" and cfg.optim.optimizer.lr == 0.001
    assert cfg.optim.optimizer.momentum == 0.9 and cfg.optim.scheduler is None
    assert cfg.data.batch_size == 8 and cfg.trainer.max_epochs == 10 and cfg.model.weights == "imagenet"
    assert cfg.trainer.precision == "bf16-mixed" and list(cfg.data.problems) == [1, 2, 3, 4, 5, 6]
    assert list(cfg.data.mean_std[1]) == [0.2748, 0.1121]


def test_dagm_cpu_is_real_dagm_on_the_cpu_with_the_full_resolution_stage(compose_cfg) -> None:
    cfg = compose_cfg("experiment=dagm_cpu")
    assert cfg.data.name == "dagm" and cfg.data.split == "official" and list(cfg.data.problems) == [1]
    assert cfg.trainer.accelerator == "cpu" and cfg.model.weights == "none" and cfg.data.image_size == 256
    assert cfg.data.sampler == "balanced" and cfg.train.monitor == "val/auc"  # the quick recipe
    assert list(cfg.fullres.supervision) and cfg.fullres.crop is None and cfg.fullres.steps == 200
    # validation's preference on real problem 1 (docs/fullres.md): flipped decoder maps and CAMs
    assert cfg.fullres.tta == "flips" and cfg.cam.tta == "flips"
    # and one decoder block over layer1..layer2 (validation level with 3 blocks, above layer4's 5; the cheapest map)
    assert cfg.fullres.deepest_layer == "layer2" and list(cfg.fullres.decoder_channels) == [32]
    assert compose_cfg().fullres.deepest_layer == "layer4"
    # the decoder's products with every CAM are scored (validation chose one over the decoder on 2 of 3 seeds)
    assert cfg.localize.fullres_products is None and list(compose_cfg().localize.fullres_products) == []


def test_official_covers_all_ten_classes(compose_cfg) -> None:
    cfg = compose_cfg("experiment=official")
    assert list(cfg.data.problems) == list(range(1, 11)) and cfg.data.split == "official"


def test_unknown_key_fails_at_composition(compose_cfg) -> None:
    with pytest.raises(Exception, match="no_such_key"):
        compose_cfg("data.no_such_key=1")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.split=halves", "data.split: 'halves'"),
        ("model.arch=vgg16", "model.arch: 'vgg16'"),
        ("cam.target=both", "cam.target: 'both'"),
        ("data.problems=[]", "data.problems"),
        ("data.problems=[11]", "data.problems: [11]"),
        ("on_stale=ignore", "on_stale: 'ignore'"),
        ("evaluate.decision=youden", "evaluate.decision: 'youden'"),
        ("cam.tta=rot45", "cam.tta: 'rot45'"),
    ],
)
def test_unknown_values_are_refused(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(compose_cfg(override))


def test_fixed_normalization_needs_constants(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="data.mean_std"):
        validate(compose_cfg("data.normalization=fixed"))


def test_launcher_configs_compose(compose_cfg) -> None:
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        slurm = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        joblib = compose(config_name="config", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.gpus_per_node == 1
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher")
