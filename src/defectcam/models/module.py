"""The LightningModule: cross-entropy classification of defect (1) vs defect-free (0), val metrics per epoch."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

from defectcam.evaluation.classification import binary_auroc, logit_margin, predict


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1,
                  final_fraction: float = 0.01) -> LambdaLR:
    """A per-step schedule: linear warm-up from ~0 to the optimizer's lr over `warmup_fraction` of
    `total_steps`, then a cosine down to `final_fraction` of it at `total_steps` (held there after)."""
    warmup = max(1, round(warmup_fraction * total_steps))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay)
        return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def epoch_metrics(loss: torch.Tensor, margin: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per-image losses, logit margins and labels (N,) -> val loss, accuracy of the argmax decision and
    AUC-ROC of the margins (NaN when one class is absent); margins, unlike softmax, never tie at 1.0."""
    return {
        "loss": float(loss.mean()),
        "acc": float((predict(margin) == labels).float().mean()),
        "auc": binary_auroc(margin, labels) if labels.min() != labels.max() else math.nan,
    }


class DefectClassifier(pl.LightningModule):
    """Wraps a backbone; logs train/loss, val/loss, val/acc, val/auc and val/acc_best."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        class_weights: Sequence[float] | None = None,
        normalization: tuple[float, float] = (0.0, 1.0),
        channels_last: bool = False,
        model_config: dict[str, Any] | None = None,
        fused_optimizer: str = "auto",
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        # The net is rebuilt from model_config when a checkpoint is loaded; the callables are not needed then.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "fused_optimizer", "compile_mode"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.fused_optimizer = fused_optimizer
        # torch.compile wraps the same modules: kept in a list so that checkpoint keys stay net.* (not registered).
        self._compiled = [torch.compile(self.net, mode=None if compile_mode == "default" else compile_mode)] if compile_mode else []
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_acc_best = 0.0
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return (self._compiled[0] if self._compiled and self.training else self.net)(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["image"]), batch["label"], weight=self.class_weights)
        # Not on the progress bar: that would read the loss back to the host (a GPU synchronization) every step.
        # TensorBoard gets train/loss_step every trainer.log_every_n_steps and the epoch mean, train/loss_epoch.
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"]).float()
        loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights, reduction="none")
        self._val_outputs.append((loss.detach(), logit_margin(logits.detach()), batch["label"]))

    def on_validation_epoch_end(self) -> None:
        loss, margin, labels = (torch.cat(parts) for parts in zip(*self._val_outputs))
        self._val_outputs.clear()
        loss, margin, labels = (self.all_gather(t).reshape(-1) for t in (loss, margin, labels))
        metrics = epoch_metrics(loss, margin, labels)
        if not self.trainer.sanity_checking:
            self.val_acc_best = max(self.val_acc_best, metrics["acc"])
        self.log_dict(
            {**{f"val/{name}": torch.tensor(value) for name, value in metrics.items()}, "val/acc_best": torch.tensor(self.val_acc_best)},
            prog_bar=True,
            sync_dist=True,  # values are already gathered, hence equal on every rank; this only silences Lightning
        )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters(), **self.fused_option())
        if self.scheduler_factory is None:
            return optimizer
        # Schedulers that need the run's length (OneCycleLR, warmup_cosine) get it; others are built as configured.
        extra = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            extra["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, **extra)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def fused_option(self) -> dict[str, bool]:
        """{'fused': True} where asked (auto: on CUDA) and the optimizer takes it: one kernel for all parameters."""
        if self.fused_optimizer == "false" or "fused" not in inspect.signature(self.optimizer_factory).parameters:
            return {}
        if {"fused", "foreach"} & set(getattr(self.optimizer_factory, "keywords", {})):
            return {}  # the optimizer's own config decides (optim.optimizer.fused / foreach)
        if self.fused_optimizer == "auto" and self.device.type != "cuda":
            return {}  # torch's default there (a foreach loop) is what the CPU numbers were measured with
        return {"fused": True}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_acc_best"] = self.val_acc_best

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_acc_best = float(checkpoint.get("val_acc_best", 0.0))
