"""How long training waits for a checkpoint: Lightning's writer against defectcam's, in step and in the background.

The checkpoint is the train stage's last.ckpt of a ResNet-50 (weights, optimizer state after one step,
loop state) on the chosen device. Timed in one run, each several times:
  lightning   — Lightning's TorchCheckpointIO (serializes into memory, then copies out to the file; the baseline);
  atomic      — defectcam's AtomicCheckpointIO (torch.save straight into a temp file, then rename);
  async       — AsyncCheckpointIO around it: training waits only for the copy of every tensor (on the GPU, a
                device copy); "then written" is the time until the file is whole.
Prints the seconds training is blocked per checkpoint and the ratio to the baseline.

    python benchmarks/bench_checkpoint.py                              # CPU, ResNet-50 with AdamW
    python benchmarks/bench_checkpoint.py --device cuda --optimizer sgd  # the paper experiment's optimizer on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from defectcam.evaluation.latency import synchronize
from defectcam.models.backbone import build_backbone
from defectcam.models.checkpoint_io import AtomicCheckpointIO, checkpoint_io


def training_state(arch: str, optimizer_name: str, device: torch.device) -> dict[str, Any]:
    """What last.ckpt holds after one optimizer step: weights, optimizer state and a little loop state."""
    net = build_backbone(arch, "none").to(device)
    factory = partial(torch.optim.AdamW, lr=1e-4) if optimizer_name == "adamw" else partial(torch.optim.SGD, lr=1e-2, momentum=0.9)
    optimizer = factory(net.parameters())
    net(torch.randn(2, 3, 64, 64, device=device)).sum().backward()
    optimizer.step()
    return {"epoch": 3, "global_step": 400, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "optimizer_states": [optimizer.state_dict()], "loops": {"fit_loop": {"epoch_progress": {"current": 3}}}}


def time_writer(name: str, state: dict[str, Any], folder: Path, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds the caller is blocked per save, and median seconds until the file is whole."""
    blocked, whole = [], []
    for k in range(repeats):
        writer = {"lightning": TorchCheckpointIO, "atomic": AtomicCheckpointIO, "async": partial(checkpoint_io, True)}[name]()
        path = folder / f"{name}_{k}.ckpt"
        synchronize(device)
        start = time.perf_counter()
        writer.save_checkpoint(state, path)
        synchronize(device)  # the clone's copies on the GPU are done: training could go on from here
        blocked.append(time.perf_counter() - start)
        writer.teardown()  # async: waits for the background write
        whole.append(time.perf_counter() - start)
        path.unlink()
    return statistics.median(blocked), statistics.median(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="where the files go (default: a temporary folder)")
    args = parser.parse_args()

    device = torch.device(args.device)
    state = training_state(args.arch, args.optimizer, device)
    size_mb = sum(t.numel() * t.element_size() for t in _tensors(state)) / 1e6
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {args.arch} + {args.optimizer}: {size_mb:.0f} MB of tensors; "
          f"median of {args.repeats}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = {writer: time_writer(writer, state, Path(tmp), args.repeats, device) for writer in ("lightning", "atomic", "async")}
    base = results["lightning"][0]
    for writer, (blocked, whole) in results.items():
        print(f"{writer:10s}: training blocked {blocked:7.3f} s ({blocked / base:5.2f}x lightning), file whole after {whole:7.3f} s")


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in _tensors(value)]
    return []


if __name__ == "__main__":
    main()
