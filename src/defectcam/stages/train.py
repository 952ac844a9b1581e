"""`defectcam-train`: one classifier per problem with Lightning; resumable, skips finished problems."""

from __future__ import annotations

import logging
import math
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

from defectcam.cuda_switch import switch_value
from defectcam.data.datamodule import JITTER_LIMIT, DefectDataModule
from defectcam.data.device_batches import DeviceImages, use_device_cache
from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.errors import ConfigError, ModelError, one_line
from defectcam.io import finite_or_null, read_json, write_json
from defectcam.models.backbone import build_backbone
from defectcam.models.checkpoint_io import checkpoint_io, use_async_checkpoints
from defectcam.models.checkpoints import SETTINGS_KEY, BestAndLastCheckpoint, EarlyStoppingFrom, monitor_mode
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
        fused_optimizer=str(cfg.trainer.fused_optimizer).lower(),
        compile_mode=compile_mode(cfg),
        model_config={"arch": str(cfg.model.arch), "num_classes": int(cfg.model.num_classes), "weights": str(cfg.model.weights)},
    )


def early_stopping(cfg: DictConfig) -> EarlyStoppingFrom | None:
    """Early stopping on train.early_stopping.monitor from its start_epoch on (None when monitor is null: train max_epochs)."""
    options = cfg.train.early_stopping
    if options.monitor is None:
        return None
    return EarlyStoppingFrom(
        start_epoch=stopping_start_epoch(cfg),
        monitor=str(options.monitor),
        mode=monitor_mode(str(options.monitor), "train.early_stopping.monitor"),
        patience=int(options.patience),
        min_delta=float(options.min_delta),
        check_finite=False,  # val/auc is NaN when validation lacks a class: count it as no improvement, do not stop
        check_on_train_epoch_end=False,  # decide at validation end, before last.ckpt stores its state
    )


def stopping_start_epoch(cfg: DictConfig) -> int:
    """The first epoch (0-based) early stopping watches: train.early_stopping.start_fraction of trainer.max_epochs."""
    return math.ceil(float(cfg.train.early_stopping.start_fraction) * int(cfg.trainer.max_epochs))


def build_trainer(cfg: DictConfig, out: Path, checkpoint: BestAndLastCheckpoint) -> pl.Trainer:
    """A Lightning Trainer from cfg.trainer, logging to TensorBoard under the problem folder."""
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    for own in ("channels_last", "fused_optimizer", "compile"):  # defectcam's, not Lightning's
        options.pop(own)
    stopper = early_stopping(cfg)
    return pl.Trainer(
        **options,
        default_root_dir=str(out),
        logger=TensorBoardLogger(save_dir=str(out), name="tensorboard", version=""),
        callbacks=[stopper, checkpoint] if stopper else [checkpoint],  # stopper first: last.ckpt gets its new state
        enable_checkpointing=False,  # our callback decides when best/last are written
        plugins=[checkpoint_io(use_async_checkpoints(cfg.train.async_checkpoints, str(cfg.trainer.accelerator)))],
        enable_progress_bar=bool(cfg.train.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


COMPILE_MODES = ("false", "true", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(cfg: DictConfig) -> str | None:
    """trainer.compile as torch.compile's mode ('default' for torch's own; true means default), None for no compiling."""
    mode = str(cfg.trainer.compile).lower()
    if mode not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile: {cfg.trainer.compile!r} is not one of {', '.join(COMPILE_MODES)}")
    return None if mode == "false" else "default" if mode == "true" else mode


def check_train_settings(cfg: DictConfig) -> None:
    """Refuse unknown or out-of-range training settings before any problem trains."""
    compile_mode(cfg)
    use_device_cache(cfg.data.device_cache, str(cfg.trainer.accelerator))
    if str(cfg.trainer.accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator: {cfg.trainer.accelerator!r} asks for a GPU, but torch sees no CUDA device "
                          f"here; use trainer=cpu (or trainer.accelerator=auto)")
    switch_value(cfg.trainer.fused_optimizer, "trainer.fused_optimizer")
    epochs = cfg.trainer.max_epochs
    # 0 would "finish" without a best.ckpt (evaluate then asks for training, and train says it is done); Lightning's
    # -1 (no limit) leaves the schedule and early stopping's start_fraction nothing to be a fraction of.
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"trainer.max_epochs: {epochs!r} must be an integer >= 1")
    use_async_checkpoints(cfg.train.async_checkpoints, str(cfg.trainer.accelerator))
    every = cfg.train.last_every_n_epochs
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"train.last_every_n_epochs: {every!r} must be an integer >= 1")
    monitor_mode(str(cfg.train.monitor), "train.monitor")
    options = cfg.train.early_stopping
    if options.monitor is not None:
        monitor_mode(str(options.monitor), "train.early_stopping.monitor")
    patience, start = options.patience, options.start_fraction
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ConfigError(f"train.early_stopping.patience: {patience!r} must be an integer >= 0")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 <= start <= 1:
        raise ConfigError(f"train.early_stopping.start_fraction: {start!r} must be a number in [0, 1]")


def train_datamodule(cfg: DictConfig, data: ProblemData, normalization: tuple[float, float]) -> DefectDataModule:
    """The problem's DataModule with the training-only sampler of data.sampler (none | balanced), its
    train/val batches built on the training device when data.device_cache says so."""
    datamodule = datamodule_for(cfg, data, normalization)
    datamodule.sampler = str(cfg.data.sampler)
    if use_device_cache(cfg.data.device_cache, str(cfg.trainer.accelerator)):
        datamodule.device_images = DeviceImages(data, *normalization, augment=[str(a) for a in cfg.data.augment],
                                                jitter_limit=JITTER_LIMIT)
    elif cfg.data.augment and datamodule.num_workers > (cpus := usable_cpus()):
        # torch's own warning about it is silenced (shell._QUIET): this line says why the count stays
        log.info("data.num_workers=%d exceeds the %d CPUs this process may use: kept, since each loader worker draws "
                 "its own seeded augmentation (another count gives another, equally valid run); lower it if loading "
                 "stalls", datamodule.num_workers, cpus)
    return datamodule


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as torch's DataLoader counts them), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _shown(value: float | None) -> str:
    """A summary number for the log: 4 decimals, or 'undefined' where the summary holds null."""
    return "undefined" if value is None else f"{value:.4f}"


def train_problem(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one problem; returns its train_summary."""
    out = problem_dir(output_dir(cfg), data.problem)
    summary_path, ckpt_dir = out / "train_summary.json", out / "checkpoints"
    signature = train_signature(cfg)
    if summary_path.is_file() and not (ckpt_dir / "best.ckpt").is_file():
        # A summary without its model (an older defectcam's 0-epoch run): not done, or evaluate and train send the
        # user to each other. Removed first, so a stopped retraining cannot leave it beside a partial best.ckpt.
        log.warning("problem %d: %s has no best.ckpt beside it; training again", data.problem, summary_path)
        summary_path.unlink(missing_ok=True)
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
    if resume:
        check_signature(resume, read_settings(resume), signature, action="started with", retry="start over")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    normalization = normalization_for(cfg, data)
    module = build_classifier(cfg, normalization)  # first: a weights error stops before Lightning starts
    checkpoint = BestAndLastCheckpoint(ckpt_dir, monitor=str(cfg.train.monitor), settings=signature,
                                       last_every=int(cfg.train.last_every_n_epochs))
    trainer = build_trainer(cfg, out, checkpoint)
    log.info("problem %d: training%s", data.problem, f" (resuming from {resume})" if resume else "")
    trainer.fit(module, datamodule=train_datamodule(cfg, data, normalization), ckpt_path=str(resume) if resume else None)
    # Rank 0 finished its checkpoint writes in fit's teardown; no rank reads best.ckpt before that.
    trainer.strategy.barrier("checkpoints written")
    if checkpoint.best_epoch < 0:
        # Every val/loss was NaN (diverged), or nothing was validated: a summary now would mark the problem trained
        # with no best.ckpt, and evaluate would send the user back to train, which would say it is done.
        raise ModelError(f"problem {data.problem}: no validation in {trainer.current_epoch} epoch(s) gave a usable val/loss, "
                         "so no best.ckpt was written (diverged? check optim.*); retrain with train.force=true")
    summary = {
        "problem": data.problem,
        "epochs": int(trainer.current_epoch),
        "stopped_early": bool(trainer.current_epoch < int(cfg.trainer.max_epochs)),
        "best_epoch": int(checkpoint.best_epoch),
        "monitor": str(cfg.train.monitor),
        "best_val_accuracy": float(checkpoint.best_acc),
        "best_val_loss": float(checkpoint.best_loss),
        "best_val_auc": float(checkpoint.best_metrics["val/auc"]),
        "train_time_s": round(checkpoint.elapsed_s(), 3),
        "device": device_name(trainer),
        "precision": str(cfg.trainer.precision),
        "train_images": int((data.table["part"] == "train").sum()),
        "normalization": list(normalization),
        "train_config": signature,
    }
    # val/auc is NaN when validation lacks a class: null in strict JSON. Only the scores: the training signature must
    # stay as given, or the reuse check would compare a recorded null with the run's value.
    summary.update(finite_or_null({key: summary[key] for key in ("best_val_accuracy", "best_val_loss", "best_val_auc")}))
    if trainer.is_global_zero:
        write_json(summary_path, summary)
    log.info("problem %d: best epoch %d by %s (val accuracy %s, AUC %s, loss %s), %.1f s on %s", data.problem,
             summary["best_epoch"], summary["monitor"], *(_shown(summary[key]) for key in ("best_val_accuracy", "best_val_auc",
             "best_val_loss")), summary["train_time_s"], summary["device"])
    return summary


def check_signature(path: Path, recorded: dict[str, Any], wanted: dict[str, Any], action: str = "trained with",
                    retry: str = "retrain") -> None:
    """Refuse to reuse (or resume) a model of other settings: one line naming the first differing setting."""
    recorded_flat, wanted_flat = flatten(recorded), flatten(wanted)
    changed = [k for k in {**wanted_flat, **recorded_flat} if recorded_flat.get(k) != wanted_flat.get(k)]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"{path}: problem {action} {key}={recorded_flat.get(key)!r}, this run asks {wanted_flat.get(key)!r}; "
            f"use train.force=true to {retry}, or another paths.output_dir"
        )


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as {dotted.key: leaf value}, so a message can name the one value that changed."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_settings(last: Path) -> dict[str, Any]:
    """The settings stored in a last.ckpt; a ModelError when it cannot be read or records none."""
    try:
        # mmap: only the small settings dict is read now; Lightning loads the tensors when it resumes.
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # corrupt or foreign files raise several types
        raise ModelError(f"{last}: cannot read the resume checkpoint ({one_line(exc)}); use train.force=true to start over") from None
    settings = checkpoint.get(SETTINGS_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(settings, dict):
        raise ModelError(f"{last}: records no training settings (written by an older defectcam); use train.force=true to start over")
    return settings


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
    check_train_settings(cfg)
    prepared = prepare_data(cfg)
    summaries = [train_problem(cfg, data) for data in prepared.values()]
    return sum(s["best_val_accuracy"] for s in summaries) / len(summaries)


main = stage_entry("train", run_train)
