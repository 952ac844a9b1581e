"""Training speed options: last.ckpt interval, fused optimizer, torch.compile; none changes what is saved or learnt."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from defectcam.errors import ConfigError
from defectcam.models.backbone import build_backbone
from defectcam.models.checkpoints import BestAndLastCheckpoint
from defectcam.models.module import DefectClassifier
from defectcam.stages.train import check_train_settings, compile_mode


class _RecordingTrainer(SimpleNamespace):
    """The parts of a Trainer BestAndLastCheckpoint reads; records which file each epoch wrote."""

    def save_checkpoint(self, path: Path, weights_only: bool = False) -> None:
        self.saved.append((self.current_epoch, Path(path).name))
        Path(path).write_text(str(self.current_epoch))


def _saves(tmp_path: Path, last_every: int, max_epochs: int, stop_after: int | None = None) -> list[tuple[int, str]]:
    callback = BestAndLastCheckpoint(tmp_path, monitor="val/loss", last_every=last_every)
    trainer = _RecordingTrainer(sanity_checking=False, max_epochs=max_epochs, should_stop=False, saved=[])
    for epoch in range(max_epochs if stop_after is None else stop_after + 1):
        loss = 1.0 / (epoch + 1) if epoch < 2 else 1.0  # improves on epochs 0 and 1 only
        trainer.current_epoch, trainer.should_stop = epoch, epoch == stop_after
        trainer.callback_metrics = {"val/acc": torch.tensor(0.5), "val/loss": torch.tensor(loss), "val/auc": torch.tensor(0.5)}
        callback.on_validation_end(trainer, None)
    return trainer.saved


def test_last_checkpoint_every_n_epochs_and_at_the_end(tmp_path: Path) -> None:
    saves = _saves(tmp_path, last_every=3, max_epochs=7)
    # epochs 3 and 6 (1-based), the last, and with every best.ckpt (epochs 1 and 2): a resume never starts
    # from a state older than best.ckpt
    assert [e for e, name in saves if name == "last.ckpt"] == [0, 1, 2, 5, 6]
    assert [e for e, name in saves if name == "best.ckpt"] == [0, 1]  # only when it changed


def test_early_stop_writes_the_last_checkpoint(tmp_path: Path) -> None:
    saves = _saves(tmp_path, last_every=4, max_epochs=20, stop_after=5)
    assert [e for e, name in saves if name == "last.ckpt"] == [0, 1, 3, 5]


def test_every_epoch_by_default(tmp_path: Path) -> None:
    saves = _saves(tmp_path, last_every=1, max_epochs=4)
    assert [e for e, name in saves if name == "last.ckpt"] == [0, 1, 2, 3]


def _module(optimizer=torch.optim.AdamW, **options: object) -> DefectClassifier:
    return DefectClassifier(build_backbone("resnet18", "none"), optimizer=partial(optimizer, lr=1e-3),
                            model_config={"arch": "resnet18", "num_classes": 2}, **options)


@pytest.mark.parametrize(("setting", "fused"), [("auto", None), ("true", True), ("false", None)])
@pytest.mark.parametrize("optimizer", [torch.optim.AdamW, torch.optim.SGD])
def test_fused_optimizer_setting_on_the_cpu(setting: str, fused: bool | None, optimizer: type) -> None:
    module = _module(optimizer, fused_optimizer=setting)
    assert module.configure_optimizers().defaults.get("fused") is fused  # auto: fused on CUDA only


def test_optimizer_config_decides_when_it_names_fused_or_foreach() -> None:
    module = DefectClassifier(build_backbone("resnet18", "none"), optimizer=partial(torch.optim.AdamW, lr=1e-3, foreach=True),
                              model_config={"arch": "resnet18", "num_classes": 2}, fused_optimizer="true")
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults.get("fused")  # fused + foreach would raise


@pytest.mark.parametrize(("value", "mode"), [("false", None), ("true", "default"), ("default", "default"),
                                             ("reduce-overhead", "reduce-overhead")])
def test_compile_setting(compose_cfg, value: str, mode: str | None) -> None:
    assert compile_mode(compose_cfg(f"trainer.compile={value}")) == mode


def test_compiled_module_keeps_its_checkpoint_keys() -> None:
    plain, compiled = _module(), _module(compile_mode="default")
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert all(key.startswith("net.") for key in compiled.state_dict())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile on the CPU needs a C compiler")
def test_compiled_training_step_matches_eager() -> None:
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    losses = []
    for mode in (None, "default"):
        torch.manual_seed(1)
        module = _module(compile_mode=mode).train()
        losses.append(torch.nn.functional.cross_entropy(module(images), labels))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_trainer_without_a_gpu_is_one_clear_line(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="trainer.accelerator: 'gpu' asks for a GPU, but torch sees no CUDA device"):
        check_train_settings(compose_cfg("trainer=gpu"))
