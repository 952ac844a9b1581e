"""How checkpoint files are written: straight to a temp file renamed into place, optionally in a background thread."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH
from lightning_utilities.core.apply_func import apply_to_collection

from defectcam.cuda_switch import on_cuda_switch
from defectcam.errors import ModelError, one_line
from defectcam.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file beside the target, then rename (`atomic_path`): a kill -9 leaves the old file whole.

    Lightning's own writer serializes the whole checkpoint into memory first (~300 MB for ResNet-50 with
    AdamW) and then copies it out; writing the file directly skips that copy. A failed write (full disk,
    unwritable folder) is a one-line ModelError naming the file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        try:
            with atomic_path(path, single_writer=True) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as exc:
            raise ModelError(f"{path}: cannot write the checkpoint ({one_line(exc)})") from None


class BackgroundCheckpointIO(AtomicCheckpointIO):
    """AtomicCheckpointIO in one worker thread, from a copy of every tensor taken when the save is asked for.

    Training waits for the copy (on the GPU a device copy), not for the disk. Writes happen in the order they
    were asked for; at most `max_pending` copies are held (best.ckpt and last.ckpt of one validation): when
    the disk is slower than training, the next save waits, so memory stays bounded. A failed write raises
    at the next save or at teardown (which the trainer calls at the end of fit, after an error too).
    """

    max_pending = 2

    def __init__(self) -> None:
        super().__init__()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone())
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending.append(self._executor.submit(super().save_checkpoint, snapshot, path, storage_options))

    def teardown(self) -> None:
        """Wait for every write; raise the first failed one's error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


def use_async_checkpoints(setting: object, accelerator: str) -> bool:
    """train.async_checkpoints: auto (on when training runs on CUDA, where the GPU would idle while a file is
    written) | true | false."""
    return on_cuda_switch(setting, "train.async_checkpoints", accelerator)


def checkpoint_io(asynchronous: bool) -> AtomicCheckpointIO:
    """The writer for a Trainer's plugins."""
    return BackgroundCheckpointIO() if asynchronous else AtomicCheckpointIO()
