"""`defectcam-train`: one classifier per problem with Lightning; resumable, skips finished problems."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.errors import ConfigError
from defectcam.io import read_json, write_json
from defectcam.models.backbone import build_backbone
from defectcam.models.checkpoints import BestAndLastCheckpoint
from defectcam.models.module import DefectClassifier
from defectcam.stages.data import prepare_data
from defectcam.stages.common import datamodule_for, normalization_for
from defectcam.stages.settings import output_dir, train_signature
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)


def build_classifier(cfg: DictConfig, normalization: tuple[float, float]) -> DefectClassifier:
    """Backbone + optimizer + scheduler from the config."""
    net = build_backbone(
        str(cfg.model.arch),
        cfg.model.weights,
        int(cfg.model.num_classes),
        bool(cfg.model.zero_init_residual),
        cfg.paths.torch_home,
    )
    return DefectClassifier(
        net,
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        class_weights=list(cfg.model.class_weights) if cfg.model.class_weights else None,
        normalization=normalization,
        channels_last=bool(cfg.trainer.channels_last),
        model_config={"arch": str(cfg.model.arch), "num_classes": int(cfg.model.num_classes), "weights": str(cfg.model.weights)},
    )


def build_trainer(cfg: DictConfig, out: Path, checkpoint: BestAndLastCheckpoint) -> pl.Trainer:
    """A Lightning Trainer from cfg.trainer, logging to TensorBoard under the problem folder."""
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    options.pop("channels_last")
    return pl.Trainer(
        **options,
        default_root_dir=str(out),
        logger=TensorBoardLogger(save_dir=str(out), name="tensorboard", version=""),
        callbacks=[checkpoint],
        enable_checkpointing=False,  # our callback writes best/last atomically
        enable_progress_bar=bool(cfg.train.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def train_problem(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one problem; returns its train_summary."""
    out = problem_dir(output_dir(cfg), data.problem)
    summary_path, ckpt_dir = out / "train_summary.json", out / "checkpoints"
    signature = train_signature(cfg)
    if summary_path.is_file() and not cfg.train.force:
        summary = read_json(summary_path)
        check_signature(summary_path, summary.get("train_config", {}), signature)
        log.info("problem %d: already trained (%s); train.force=true retrains", data.problem, summary_path)
        return summary
    last = ckpt_dir / "last.ckpt"
    if cfg.train.force:
        for path in (ckpt_dir / "best.ckpt", last, summary_path):
            path.unlink(missing_ok=True)
    resume = last if last.is_file() else None
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    normalization = normalization_for(cfg, data)
    module = build_classifier(cfg, normalization)  # first: a weights error stops before Lightning starts
    checkpoint = BestAndLastCheckpoint(ckpt_dir)
    trainer = build_trainer(cfg, out, checkpoint)
    log.info("problem %d: training%s", data.problem, f" (resuming from {resume})" if resume else "")
    trainer.fit(module, datamodule=datamodule_for(cfg, data, normalization), ckpt_path=str(resume) if resume else None)
    summary = {
        "problem": data.problem,
        "epochs": int(trainer.current_epoch),
        "best_epoch": int(checkpoint.best_epoch),
        "best_val_accuracy": float(checkpoint.best_acc),
        "best_val_loss": float(checkpoint.best_loss),
        "train_time_s": round(checkpoint.elapsed_s(), 3),
        "device": device_name(trainer),
        "precision": str(cfg.trainer.precision),
        "train_images": int((data.table["part"] == "train").sum()),
        "normalization": list(normalization),
        "train_config": signature,
    }
    if trainer.is_global_zero:
        write_json(summary_path, summary)
    log.info("problem %d: best val accuracy %.4f (epoch %d), %.1f s on %s", data.problem, summary["best_val_accuracy"],
             summary["best_epoch"], summary["train_time_s"], summary["device"])
    return summary


def check_signature(path: Path, recorded: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to reuse a model trained with other settings (one line naming the first difference)."""
    changed = [k for k in wanted if recorded.get(k) != wanted[k]]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"{path}: problem trained with {key}={recorded.get(key)!r}, this run asks {wanted[key]!r}; "
            "use train.force=true to retrain, or another paths.output_dir"
        )


def device_name(trainer: pl.Trainer) -> str:
    """A readable name of the device(s) training ran on."""
    root = trainer.strategy.root_device
    name = torch.cuda.get_device_name(root) if root.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return f"{name} x{trainer.world_size}" if trainer.world_size > 1 else name


def run_train(cfg: DictConfig) -> float:
    """The train stage over every problem; returns the mean best validation accuracy (for sweepers)."""
    if str(cfg.trainer.strategy).startswith("ddp") and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        # Lightning relaunches sys.argv for the other ranks: with -m each rank would start the whole sweep.
        raise ConfigError("trainer=ddp cannot run inside a Hydra multirun (-m); train one problem per call instead")
    prepared = prepare_data(cfg)
    summaries = [train_problem(cfg, data) for data in prepared.values()]
    return sum(s["best_val_accuracy"] for s in summaries) / len(summaries)


main = stage_entry("train", run_train)
