"""This machine's reference speed now, the unit the project's time budgets are stated in.

The speed is bare ResNet-50 training throughput in images per second: torchvision's ResNet-50 from scratch with a
2-class head, fp32, AdamW, batches of 16 random 128 x 128 images, one warm-up step and then `steps` timed steps on
the CPU. A wall time W seconds of some command, measured on a noisy shared machine, is W x speed "bare-image
equivalents", where speed is the mean of this script's output just before and just after the command. The product
holds across machines and loads far better than seconds do: a machine twice as fast, or half as busy, does twice the
bare steps and takes half the wall time.

    python benchmarks/reference_speed.py          # prints e.g. 15.02
    python benchmarks/reference_speed.py 8        # more steps, a steadier reading
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

BATCH, SIDE, CLASSES = 16, 128, 2


def reference_speed(steps: int) -> float:
    """Images per second of `steps` bare training steps, after one untimed warm-up step."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=CLASSES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.randn(BATCH, 3, SIDE, SIDE), torch.randint(0, CLASSES, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    step()  # the first step allocates and picks kernels: not part of the speed
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=4, help="timed steps (default 4)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("steps must be >= 1")
    print(f"{reference_speed(args.steps):.2f}")


if __name__ == "__main__":
    main()
