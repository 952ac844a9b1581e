"""Pieces several stages share: the device to run on and a problem's trained classifier and data."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from defectcam.cuda_switch import trains_on_cuda
from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.errors import ConfigError, StageOrderError
from defectcam.io import read_json
from defectcam.models.loading import load_classifier
from defectcam.stages.settings import classifier_change, hydra_value, output_dir, problems_of, train_signature, validate

if TYPE_CHECKING:
    from defectcam.data.datamodule import DefectDataModule
    from defectcam.models.module import DefectClassifier


def inference_device(cfg: DictConfig) -> torch.device:
    """CUDA where training runs on CUDA (trainer.accelerator gpu/cuda, or auto with a GPU present), else the CPU."""
    return torch.device("cuda" if trains_on_cuda(str(cfg.trainer.accelerator)) else "cpu")


def autocast_for(cfg: DictConfig, device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA when training used bf16-mixed, else nothing."""
    if device.type == "cuda" and str(cfg.trainer.precision).startswith("bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def best_checkpoint(cfg: DictConfig, problem: int) -> Path:
    """Path of a problem's best.ckpt."""
    return problem_dir(output_dir(cfg), problem) / "checkpoints" / "best.ckpt"


def normalization_for(cfg: DictConfig, data: ProblemData) -> tuple[float, float]:
    """Per-problem (mean, std): measured on the train part, or the fixed constants of the config."""
    if cfg.data.normalization == "fixed":
        mean, std = cfg.data.mean_std[data.problem]
        return float(mean), float(std)
    from defectcam.data.datamodule import train_normalization  # Lightning: imported where a stage uses it (see below)

    return train_normalization(data)


def datamodule_for(cfg: DictConfig, data: ProblemData, normalization: tuple[float, float]) -> DefectDataModule:
    """The DataModule of one problem as the config describes it."""
    # Imported here: Lightning (and the torchvision it imports) costs about 3 s at start-up, which every stage
    # importing this module would pay before it could report a bad setting.
    from defectcam.data.datamodule import DefectDataModule, train_augmentation

    return DefectDataModule(
        data,
        *normalization,
        batch_size=int(cfg.data.batch_size),
        eval_batch_size=int(cfg.data.eval_batch_size),
        num_workers=int(cfg.data.num_workers),
        augment=train_augmentation([str(name) for name in cfg.data.augment]),
        pin_memory=cfg.trainer.accelerator in ("gpu", "cuda"),
    )


def require_trained(cfg: DictConfig, problem: int) -> None:
    """One line when a problem has not finished training (best.ckpt of an unfinished run is not a result), or when
    the run's settings describe another classifier than the one trained there (another seed, say): a stage after
    training would otherwise explain, decode and score that classifier under settings it was not trained with, and
    retrain the decoder over it where its own settings include them (`seed`)."""
    summary = problem_dir(output_dir(cfg), problem) / "train_summary.json"
    if not summary.is_file():
        raise StageOrderError(f"{summary}: problem {problem} has not finished training; run the train stage (make train)")
    recorded = read_json(summary).get("train_config")
    change = None if recorded is None else classifier_change(recorded, train_signature(cfg))  # None: an older summary
    if change:
        key, was, now = change
        shown_was, shown_now = hydra_value(was), hydra_value(now)
        use = f"pass {key}={shown_was}" if shown_was is not None else f"restore {key} as its train_config records it"
        raise ConfigError(f"{summary}: problem {problem} was trained with {key}={shown_was or repr(was)}, this run asks "
                          f"{shown_now or repr(now)}; {use} to use that classifier, or retrain it (train.force=true), "
                          "or use another paths.output_dir")


def secondary_rank() -> bool:
    """True in a process a DDP launcher started beside global rank 0 (Lightning's relaunched ranks, torchrun's, the
    tasks of one `srun -n N`)."""
    return any(int(os.environ.get(name, "0")) > 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def require_all_trained(cfg: DictConfig) -> None:
    """require_trained for every problem asked for, before the data stage's work: a stage after training once
    indexed, split and cached every problem (minutes on real DAGM) only to say the first was not trained.
    The settings are checked first, so a typo is still named as a typo."""
    validate(cfg)
    for problem in problems_of(cfg):
        require_trained(cfg, problem)


def trained_problem(cfg: DictConfig, data: ProblemData, device: torch.device) -> tuple[DefectClassifier, DefectDataModule]:
    """The best classifier of a problem on `device` and a DataModule normalized as it was trained."""
    require_trained(cfg, data.problem)
    module = load_classifier(best_checkpoint(cfg, data.problem)).to(device)
    if device.type == "cuda" and cfg.trainer.channels_last:
        module.net.to(memory_format=torch.channels_last)
    return module, datamodule_for(cfg, data, tuple(module.hparams.normalization))
