"""Read stage settings out of the composed config: validate enumerated values, build plain objects."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from defectcam.data.prepare import SplitSettings
from defectcam.errors import ConfigError

CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": ("synthetic", "dagm"),
    "data.split": ("official", "paper"),
    "data.normalization": ("train", "fixed"),
    "model.arch": ("resnet18", "resnet34", "resnet50", "resnet101"),
    "cam.target": ("defect", "predicted"),
}


def validate(cfg: DictConfig) -> None:
    """Refuse unknown enumerated values with a one-line message naming the key and the choices."""
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    problems = problems_of(cfg)
    if not problems or any(p < 1 for p in problems):
        raise ConfigError(f"data.problems: {problems} must be a non-empty list of DAGM class numbers (1..10)")
    if cfg.data.normalization == "fixed":
        missing = [p for p in problems if cfg.data.mean_std is None or p not in cfg.data.mean_std]
        if missing:
            raise ConfigError(f"data.mean_std: no [mean, std] for problem(s) {missing} (data.normalization=fixed)")


def problems_of(cfg: DictConfig) -> list[int]:
    """data.problems as a sorted list of ints (a bare int is accepted too)."""
    problems = cfg.data.problems
    if isinstance(problems, int):
        return [problems]
    try:
        return sorted({int(p) for p in problems})
    except (TypeError, ValueError):
        raise ConfigError(f"data.problems: {problems!r} must be a list of class numbers, e.g. [1,2]") from None


def output_dir(cfg: DictConfig) -> Path:
    """The experiment's output folder, absolute."""
    return Path(cfg.paths.output_dir).expanduser().resolve()


def split_settings(cfg: DictConfig) -> SplitSettings:
    """The settings that decide a split, from cfg.data and cfg.seed."""
    return SplitSettings(
        kind=str(cfg.data.split),
        seed=int(cfg.seed),
        val_fraction=float(cfg.data.val_fraction),
        test_fraction=float(cfg.data.test_fraction),
    )
