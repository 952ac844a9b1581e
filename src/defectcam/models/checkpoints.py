"""Training callbacks: atomic best/last checkpoints (best by a monitored val metric, ties broken by lower
val/loss), the run's settings stored in last.ckpt at every save, resumable time to train, and early
stopping that starts watching after the noisy first epochs."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping

from defectcam.errors import ConfigError

# The validation metrics a best checkpoint (or early stopping) can follow, and which way is better.
MONITOR_MODES = {"val/acc": "max", "val/auc": "max", "val/loss": "min"}
SETTINGS_KEY = "defectcam_settings"  # top-level key of the settings dict in last.ckpt


def monitor_mode(monitor: str, setting: str) -> str:
    """'max' or 'min' for a monitored metric; a ConfigError naming `setting` for an unknown one."""
    if monitor not in MONITOR_MODES:
        raise ConfigError(f"{setting}: {monitor!r} is not one of {', '.join(MONITOR_MODES)}")
    return MONITOR_MODES[monitor]


def ranking_key(value: float, loss: float, mode: str) -> tuple[float, float]:
    """A tuple that grows as a checkpoint gets better: the monitored value (NaN = worst), then lower val loss."""
    if math.isnan(value):
        # val/auc is NaN when validation lacks a class: never better than a number, ties go to the loss.
        return -math.inf, -loss
    return (value if mode == "max" else -value), -loss


class BestAndLastCheckpoint(pl.Callback):
    """After a validation, write best.ckpt when (monitor, -val/loss) improved, and last.ckpt then or when due; atomically.

    `settings` (plain, JSON-like) is stored under SETTINGS_KEY in last.ckpt (Lightning calls callbacks'
    on_save_checkpoint for full checkpoints only), so a resumed run can check that it continues the
    training it was started with. last.ckpt (model, optimizer and loop state: ~280 MB for ResNet-50 with
    AdamW) is written every `last_every` epochs, at the run's last epoch and whenever best.ckpt changes; a kill
    between two saves loses at most `last_every` epochs. best.ckpt (weights only) is written only when it changes.
    """

    def __init__(self, dirpath: str | Path, monitor: str = "val/acc", settings: dict[str, Any] | None = None,
                 last_every: int = 1) -> None:
        self.dirpath, self.monitor, self.settings = Path(dirpath), monitor, settings
        self.last_every = last_every
        self.mode = monitor_mode(monitor, "train.monitor")
        self.best_key: tuple[float, float] = (-math.inf, -math.inf)
        self.best_epoch = -1
        self.best_metrics: dict[str, float] = {"val/acc": -math.inf, "val/loss": math.inf, "val/auc": math.nan}
        self.elapsed_before_s, self._session_start = 0.0, time.perf_counter()

    @property
    def state_key(self) -> str:
        return "BestAndLastCheckpoint"

    @property
    def best_acc(self) -> float:
        """Validation accuracy of the best checkpoint."""
        return self.best_metrics["val/acc"]

    @property
    def best_loss(self) -> float:
        """Validation loss of the best checkpoint."""
        return self.best_metrics["val/loss"]

    def elapsed_s(self) -> float:
        """Time spent training, over every session of a resumed run."""
        return self.elapsed_before_s + time.perf_counter() - self._session_start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._session_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {name: float(trainer.callback_metrics[name]) for name in MONITOR_MODES}
        key = ranking_key(metrics[self.monitor], metrics["val/loss"], self.mode)
        improved = key > self.best_key
        if improved:
            self.best_key, self.best_metrics, self.best_epoch = key, metrics, trainer.current_epoch
            self._save(trainer, "best.ckpt")
        # With best.ckpt, last.ckpt too: it holds the best score and epoch a resumed run compares against, so
        # a kill can never leave a best.ckpt newer than the state a resume starts from.
        if improved or self._last_due(trainer):
            self._save(trainer, "last.ckpt")

    def _last_due(self, trainer: pl.Trainer) -> bool:
        """last.ckpt at every last_every-th epoch, and at the final one (max_epochs reached or a stop requested)."""
        epoch = trainer.current_epoch + 1
        if epoch % self.last_every == 0:
            return True
        return trainer.should_stop or (trainer.max_epochs is not None and epoch >= trainer.max_epochs)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.settings is not None:
            checkpoint[SETTINGS_KEY] = self.settings

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_key": list(self.best_key),
            "best_metrics": dict(self.best_metrics),
            "best_epoch": self.best_epoch,
            "elapsed_s": self.elapsed_s(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The monitor is part of the run's settings: train.py refuses a resume with another one before this.
        self.best_key = tuple(state_dict["best_key"])
        self.best_metrics = dict(state_dict["best_metrics"])
        self.best_epoch, self.elapsed_before_s = state_dict["best_epoch"], state_dict["elapsed_s"]
        self._session_start = time.perf_counter()

    def _save(self, trainer: pl.Trainer, name: str) -> None:
        # Every rank takes part (the trainer synchronizes them); rank 0 writes through the trainer's checkpoint
        # IO, which renames a finished temp file into place (checkpoint_io.py), in a background thread if asked.
        trainer.save_checkpoint(self.dirpath / name, weights_only=name == "best.ckpt")  # best.ckpt is for inference only


class EarlyStoppingFrom(EarlyStopping):
    """Lightning's EarlyStopping that ignores the validations of epochs before `start_epoch`.

    From scratch, with a high learning rate, the first epochs' val loss jumps, and the prior-only model of
    epoch 0 (every image defect-free) can score a val loss later epochs need many epochs to beat. Lightning's
    own `min_epochs` does not help: a stop requested early is only postponed, never withdrawn. Here the
    early epochs never set the reference, so the run stops only after `patience` epochs without improving
    on the best epoch since `start_epoch` (at the earliest after epoch start_epoch + patience).
    """

    def __init__(self, start_epoch: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_epoch = start_epoch

    def _should_skip_check(self, trainer: pl.Trainer) -> bool:
        return super()._should_skip_check(trainer) or trainer.current_epoch < self.start_epoch
