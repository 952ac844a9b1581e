"""Read stage settings out of the composed config: validate enumerated values, build plain objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    _check_number(cfg, "localize.n_thresholds", minimum=2, integer=True)
    _check_number(cfg, "evaluate.latency_images", minimum=1, integer=True)
    _check_number(cfg, "evaluate.warmup", minimum=0, integer=True)
    if cfg.localize.threshold is not None:
        _check_number(cfg, "localize.threshold", minimum=0.0, maximum=1.0)
    if cfg.data.normalization == "fixed":
        missing = [p for p in problems if cfg.data.mean_std is None or p not in cfg.data.mean_std]
        if missing:
            raise ConfigError(f"data.mean_std: no [mean, std] for problem(s) {missing} (data.normalization=fixed)")


def _check_number(cfg: DictConfig, key: str, minimum: float, maximum: float | None = None, integer: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{key}: {value!r} must be {'an integer' if integer else 'a number'} {bounds}")


def train_signature(cfg: DictConfig) -> dict[str, Any]:
    """The settings a trained model depends on (a finished problem is reused only when they are equal)."""
    keys = ("model", "optim", "trainer.max_epochs", "trainer.precision", "data.image_size", "data.augment",
            "data.batch_size", "data.normalization", "seed")
    return {key: to_plain(OmegaConf.select(cfg, key)) for key in keys}


def to_plain(value: Any) -> Any:
    """A config node as plain Python (for JSON and comparison)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


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
    """The settings that decide a split, from cfg.data (its own seed: training seeds share one split)."""
    return SplitSettings(
        kind=str(cfg.data.split),
        seed=int(cfg.data.split_seed),
        val_fraction=float(cfg.data.val_fraction),
        test_fraction=float(cfg.data.test_fraction),
    )
