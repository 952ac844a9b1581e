"""Speed settings that read auto | true | false, where auto means: on when training runs on CUDA."""

from __future__ import annotations

import torch

from defectcam.errors import ConfigError

SWITCH_CHOICES = ("auto", "true", "false")


def switch_value(setting: object, key: str) -> str:
    """The setting as 'auto', 'true' or 'false' (YAML's booleans included); a ConfigError naming `key` otherwise."""
    value = str(setting).lower()
    if value not in SWITCH_CHOICES:
        raise ConfigError(f"{key}: {setting!r} is not one of {', '.join(SWITCH_CHOICES)}")
    return value


def trains_on_cuda(accelerator: str) -> bool:
    """Whether trainer.accelerator puts training on CUDA here: gpu or cuda, or auto with a GPU present (which
    Lightning's auto picks)."""
    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def on_cuda_switch(setting: object, key: str, accelerator: str) -> bool:
    """True for 'true', False for 'false'; for 'auto', whether training runs on CUDA."""
    value = switch_value(setting, key)
    return trains_on_cuda(accelerator) if value == "auto" else value == "true"
