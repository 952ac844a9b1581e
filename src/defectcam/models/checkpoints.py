"""Atomic best/last checkpoints (best by val/acc, ties broken by lower val/loss) and resumable time to train."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class BestAndLastCheckpoint(pl.Callback):
    """After each validation, write last.ckpt, and best.ckpt when (val/acc, -val/loss) improved; both atomically."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.best_acc, self.best_loss, self.best_epoch = -math.inf, math.inf, -1
        self.elapsed_before_s, self._session_start = 0.0, time.perf_counter()

    @property
    def state_key(self) -> str:
        return "BestAndLastCheckpoint"

    def elapsed_s(self) -> float:
        """Time spent training, over every session of a resumed run."""
        return self.elapsed_before_s + time.perf_counter() - self._session_start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._session_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        acc, loss = float(metrics["val/acc"]), float(metrics["val/loss"])
        if (acc, -loss) > (self.best_acc, -self.best_loss):
            self.best_acc, self.best_loss, self.best_epoch = acc, loss, trainer.current_epoch
            self._save(trainer, "best.ckpt")
        self._save(trainer, "last.ckpt")

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_acc": self.best_acc,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "elapsed_s": self.elapsed_s(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_acc, self.best_loss = state_dict["best_acc"], state_dict["best_loss"]
        self.best_epoch, self.elapsed_before_s = state_dict["best_epoch"], state_dict["elapsed_s"]
        self._session_start = time.perf_counter()

    def _save(self, trainer: pl.Trainer, name: str) -> None:
        # Every rank calls save_checkpoint (it synchronizes); rank 0 alone writes and renames.
        tmp = self.dirpath / f".{name}.tmp"
        trainer.save_checkpoint(tmp, weights_only=name == "best.ckpt")  # best.ckpt is for inference only
        if trainer.is_global_zero:
            os.replace(tmp, self.dirpath / name)
        trainer.strategy.barrier()
