"""How checkpoint files are written: straight to a temp file renamed into place, optionally in a background thread."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import AsyncCheckpointIO

from defectcam.cuda_switch import on_cuda_switch
from defectcam.io import atomic_path

class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file beside the target, then os.replace: a kill -9 leaves the old file whole.

    Lightning's own writer serializes the whole checkpoint into memory first (~300 MB for ResNet-50 with
    AdamW) and then copies it out; writing the file directly skips that copy.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def use_async_checkpoints(setting: object, accelerator: str) -> bool:
    """train.async_checkpoints: auto (on when training runs on CUDA, where the GPU would idle while a file is
    written) | true | false."""
    return on_cuda_switch(setting, "train.async_checkpoints", accelerator)


def checkpoint_io(asynchronous: bool) -> TorchCheckpointIO | AsyncCheckpointIO:
    """The writer for a Trainer's plugins.

    Asynchronous: Lightning's AsyncCheckpointIO clones every tensor of the checkpoint on the training
    thread (on the GPU, a device copy), so training can go on changing the weights while one worker thread
    writes the copy, in the order the saves were asked for; the trainer's teardown waits for the last write
    and raises a failed write's error.
    """
    atomic = AtomicCheckpointIO()
    return AsyncCheckpointIO(atomic) if asynchronous else atomic
