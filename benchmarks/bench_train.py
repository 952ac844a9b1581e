"""Training-loop overhead: Lightning's epoch (data pipeline, logging, checkpoints) against bare steps.

Both run in this process on the same model, the same cached images and the same batches:
  bare    — forward + backward + optimizer step over pre-built tensors (the compute floor);
  loop    — one epoch of defectcam's real training (DataModule with augmentation, Lightning Trainer,
            metrics, validation excluded), timed by wall clock.
Prints seconds per epoch, images/s and the ratio loop / bare (goal <= 1.3x).

    python benchmarks/bench_train.py                       # CPU, ResNet-50 at 128 px, 64 images
    python benchmarks/bench_train.py --device cuda --size 512 --images 256 --batch 8 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import pytorch_lightning as pl
import torch

from defectcam.data.datamodule import DefectDataModule, train_augmentation
from defectcam.data.random_problem import random_problem
from defectcam.evaluation.latency import synchronize
from defectcam.models.backbone import build_backbone
from defectcam.models.module import DefectClassifier


def bare_epoch(module: DefectClassifier, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device, bf16: bool) -> float:
    """Seconds for forward/backward/step over pre-built device batches."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()
    synchronize(device)
    start = time.perf_counter()
    for images, labels in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(module(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


class EpochTimer(pl.Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize(pl_module.device)
        self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of the loop (the first is warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--sampler", default="balanced", choices=["none", "balanced"], help="train batches (the quick recipe: balanced)")
    args = parser.parse_args()
    device = torch.device(args.device)
    bf16 = args.precision.startswith("bf16")
    channels_last = device.type == "cuda"
    data = random_problem({"train": args.images}, args.size, defect_every=4)
    datamodule = DefectDataModule(data, 0.5, 0.25, batch_size=args.batch, num_workers=args.workers, augment=train_augmentation(), sampler=args.sampler,
                                  pin_memory=device.type == "cuda")

    torch.manual_seed(0)
    module = DefectClassifier(build_backbone(args.arch, "none", zero_init_residual=True), optimizer=torch.optim.AdamW,
                              channels_last=channels_last, model_config={"arch": args.arch, "num_classes": 2}).to(device)
    batches = [(b["image"].to(device), b["label"].to(device)) for b in datamodule.train_dataloader()]
    bare_epoch(module, batches[:2], device, bf16)  # warm-up (kernels, allocator)
    bare = min(bare_epoch(module, batches, device, bf16) for _ in range(args.epochs))

    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=args.precision,
                             max_epochs=args.epochs + 1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], default_root_dir=tmp)
        trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    loop = min(timer.seconds[1:])  # the first epoch warms up Lightning

    n = sum(len(labels) for _, labels in batches)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"device: {name}; {args.arch} {args.size}x{args.size}, {n} images/epoch, batch {args.batch}, {args.precision}")
    print(f"bare forward/backward/step : {bare:8.3f} s/epoch  {n / bare:8.1f} img/s")
    print(f"Lightning training loop    : {loop:8.3f} s/epoch  {n / loop:8.1f} img/s")
    print(f"overhead loop / bare       : {loop / bare:8.2f}x  (goal <= 1.3x)")


if __name__ == "__main__":
    main()
