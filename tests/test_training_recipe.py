"""The training recipe's parts: warm-up + cosine schedule, best.ckpt by a chosen monitor, early stopping
that ignores the first epochs, and the quick experiment's settings on both datasets."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli, tiny_overrides
from defectcam.errors import ConfigError
from defectcam.models.checkpoints import BestAndLastCheckpoint
from defectcam.models.module import warmup_cosine
from defectcam.stages.train import check_train_settings


def _learning_rates(total: int, **options: float) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=total, **options)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_warmup_then_cosine_down_to_the_floor() -> None:
    rates = _learning_rates(100, warmup_fraction=0.1, final_fraction=0.01)
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert all(a < b for a, b in zip(rates[:9], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # then never up again
    assert rates[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert rates[-1] == pytest.approx(0.01, abs=0.01)


class _FakeTrainer(SimpleNamespace):
    """The parts of a Trainer that BestAndLastCheckpoint reads; save_checkpoint writes the epoch number."""

    def save_checkpoint(self, path: Path, weights_only: bool = False) -> None:
        Path(path).write_text(str(self.current_epoch))


def _best_epoch(tmp_path: Path, monitor: str, epochs: list[dict[str, float]]) -> int:
    callback = BestAndLastCheckpoint(tmp_path, monitor=monitor)
    trainer = _FakeTrainer(sanity_checking=False)
    for epoch, metrics in enumerate(epochs):
        trainer.current_epoch, trainer.callback_metrics = epoch, {k: torch.tensor(v) for k, v in metrics.items()}
        callback.on_validation_end(trainer, None)
    assert int((tmp_path / "best.ckpt").read_text()) == callback.best_epoch
    assert int((tmp_path / "last.ckpt").read_text()) == len(epochs) - 1
    return callback.best_epoch


EPOCHS = [
    {"val/acc": 0.875, "val/loss": 0.60, "val/auc": 0.70},
    {"val/acc": 0.900, "val/loss": 0.45, "val/auc": 0.80},  # best accuracy (with epoch 3), lower loss
    {"val/acc": 0.875, "val/loss": 0.20, "val/auc": 0.95},  # best loss and AUC
    {"val/acc": 0.900, "val/loss": 0.50, "val/auc": 0.95},  # AUC ties epoch 2, higher loss
]


@pytest.mark.parametrize(("monitor", "best"), [("val/acc", 1), ("val/loss", 2), ("val/auc", 2)])
def test_best_checkpoint_follows_the_monitor(tmp_path: Path, monitor: str, best: int) -> None:
    assert _best_epoch(tmp_path, monitor, EPOCHS) == best


def test_nan_auc_never_beats_a_number(tmp_path: Path) -> None:
    epochs = [{"val/acc": 0.9, "val/loss": 0.3, "val/auc": math.nan}, {"val/acc": 0.8, "val/loss": 0.5, "val/auc": 0.6},
              {"val/acc": 0.9, "val/loss": 0.1, "val/auc": math.nan}]
    assert _best_epoch(tmp_path, "val/auc", epochs) == 1


def test_nan_auc_everywhere_still_gives_a_best_checkpoint(tmp_path: Path) -> None:
    # Validation without a defective image: AUC is NaN every epoch; the lowest loss decides.
    epochs = [{"val/acc": 0.9, "val/loss": loss, "val/auc": math.nan} for loss in (0.3, 0.1, 0.2)]
    assert _best_epoch(tmp_path, "val/auc", epochs) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.monitor=val/f1", "train.monitor: 'val/f1'"),
        ("train.early_stopping.monitor=loss", "train.early_stopping.monitor: 'loss'"),
        ("train.early_stopping.patience=-1", "train.early_stopping.patience: -1"),
        ("train.early_stopping.start_fraction=1.5", "train.early_stopping.start_fraction: 1.5"),
        ("trainer.compile=turbo", "trainer.compile: 'turbo' is not one of false, true, default, reduce-overhead"),
        ("trainer.fused_optimizer=maybe", "trainer.fused_optimizer: 'maybe' is not one of auto, true, false"),
        ("train.last_every_n_epochs=0", "train.last_every_n_epochs: 0 must be an integer >= 1"),
        ("data.device_cache=gpu", "data.device_cache: 'gpu' is not one of auto, true, false"),
        ("train.async_checkpoints=later", "train.async_checkpoints: 'later' is not one of auto, true, false"),
    ],
)
def test_unknown_training_settings_are_refused(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_train_settings(compose_cfg(override))


def test_early_stopping_watches_from_its_start_epoch(tmp_path: Path) -> None:
    # min_delta 2: no accuracy can improve by 2, so every watched epoch after the first is "no improvement".
    # start_fraction 0.4 of 5 epochs: epochs 0-1 are ignored, epoch 2 sets the reference, epoch 3 stops it.
    overrides = [*tiny_overrides(tmp_path / "syn", tmp_path / "out", "[1]"), "trainer.max_epochs=5",
                 "train.early_stopping.monitor=val/acc", "train.early_stopping.patience=1",
                 "train.early_stopping.min_delta=2.0", "train.early_stopping.start_fraction=0.4"]
    result = run_cli("train", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "problem_1" / "train_summary.json").read_text())
    assert summary["epochs"] == 4 and summary["stopped_early"]  # watching from epoch 0 would stop after 2
    assert 0 <= summary["best_epoch"] < 4


def test_quick_recipe_on_both_datasets(compose_cfg) -> None:
    synthetic, real = compose_cfg(), compose_cfg("data=dagm")
    for cfg in (synthetic, real):
        assert cfg.data.sampler == "balanced" and cfg.train.monitor == "val/auc"
        assert cfg.train.early_stopping.monitor == "val/loss" and cfg.optim.scheduler._target_.endswith("warmup_cosine")
    # Only the schedule's length differs: real defects need the longer one.
    assert (synthetic.trainer.max_epochs, real.trainer.max_epochs) == (6, 20)
    assert compose_cfg("experiment=paper").trainer.max_epochs == 10  # other experiments keep their own
