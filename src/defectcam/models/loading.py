"""Rebuild a trained classifier from best.ckpt for evaluation and CAMs (no optimizer, no Lightning trainer)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from defectcam.errors import ModelError, StageOrderError, one_line

if TYPE_CHECKING:
    from defectcam.models.module import DefectClassifier


def load_classifier(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> DefectClassifier:
    """The classifier of a checkpoint, in eval mode, with its normalization in hparams."""
    # Imported here: Lightning and torchvision cost about 3 s at start-up, which every stage that imports this module
    # would pay before it could report a bad setting; only loading a classifier needs them.
    from defectcam.models.backbone import build_backbone
    from defectcam.models.module import DefectClassifier

    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise StageOrderError(f"{ckpt_path}: no checkpoint; run the train stage first (make train / defectcam-train)")
    try:
        checkpoint = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt or foreign files raise several types
        raise ModelError(f"{ckpt_path}: cannot read checkpoint ({one_line(exc)})") from None
    try:
        hparams = checkpoint["hyper_parameters"]
        model_config = dict(hparams["model_config"])
        state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    except (KeyError, TypeError):
        raise ModelError(f"{ckpt_path}: not a defectcam checkpoint (no hyper_parameters/model_config/state_dict)") from None
    net = build_backbone(model_config["arch"], "none", int(model_config["num_classes"]))
    module = DefectClassifier(
        net,
        optimizer=torch.optim.SGD,
        class_weights=hparams.get("class_weights"),
        normalization=tuple(hparams["normalization"]),
        channels_last=False,
        model_config=model_config,
    )
    try:
        module.load_state_dict(state, strict=True)  # a missing or renamed key must not leave random weights
    except RuntimeError as exc:
        raise ModelError(f"{ckpt_path}: weights do not fit {model_config['arch']} ({one_line(exc)})") from None
    return module.eval()


def file_sha1(path: str | Path) -> str:
    """SHA-1 of a file's bytes (identifies the checkpoint a cache was made from)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
