"""The reference study's training, timed through defectcam's own train stage on random data of its shape.

Per problem: 805 train + 172 val random uint8 images, 10 epochs, batch 8, at 512x512, the `paper`
experiment's settings (SGD, no augmentation, fixed normalization, bf16-mixed and channels_last on a GPU)
except `model.weights=none` (no download here; pretrained weights do not change the speed). Each problem
goes through `train_problem`, the function `defectcam-train` runs: DataModule, LightningModule, validation
every epoch, best/last checkpoints, the train summary. In the same run it times bare steps (forward,
backward, optimizer step on pre-built device batches, same model and precision) as the floor, and prints
total seconds, images/s and the ratio stage / bare.

    python benchmarks/bench_paper_gpu.py                          # the study's shape: 6 problems (GPU: goal <= 60 s)
    python benchmarks/bench_paper_gpu.py --concurrent 3           # also: the problems in 3 processes at once
    python benchmarks/bench_paper_gpu.py --set trainer.compile=reduce-overhead --set data.device_cache=false
    python benchmarks/bench_paper_gpu.py --problems 1 --train 16 --val 8 --epochs 1 --size 32 --arch resnet18  # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from defectcam.data.random_problem import random_problem
from defectcam.evaluation.latency import synchronize
from defectcam.stages.shell import quiet_known_warnings
from defectcam.stages.train import build_classifier, train_problem


def bench_config(args: argparse.Namespace, output_dir: Path) -> DictConfig:
    """The paper experiment with the benchmark's shape, on the GPU when there is one."""
    gpu = torch.cuda.is_available() and args.device != "cpu"
    overrides = [
        "experiment=paper", "model.weights=none", f"model.arch={args.arch}", f"paths.output_dir={output_dir}",
        f"data.image_size={args.size}", f"data.batch_size={args.batch}", f"trainer.max_epochs={args.epochs}",
        "train.progress_bar=false",
        *([] if gpu else ["trainer=cpu", "data.num_workers=0"]),
        *args.set,
    ]
    with initialize_config_module(config_module="defectcam.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def train_one(args: argparse.Namespace, problem: int, output_dir: Path) -> dict[str, Any]:
    """One problem through the train stage's function; its summary plus the wall time around it."""
    quiet_known_warnings()  # also in joblib's worker processes
    cfg = bench_config(args, output_dir)
    data = random_problem({"train": args.train, "val": args.val}, args.size, problem=problem, seed=args.seed + problem)
    start = time.perf_counter()
    summary = train_problem(cfg, data)
    return {**summary, "wall_s": time.perf_counter() - start}


def train_all(args: argparse.Namespace, output_dir: Path, concurrent: int) -> float:
    """Seconds to train every problem: one after the other, or `concurrent` processes sharing the device (joblib)."""
    problems = list(range(1, args.problems + 1))
    start = time.perf_counter()
    if concurrent <= 1:
        summaries = [train_one(args, p, output_dir) for p in problems]
    else:
        from joblib import Parallel, delayed  # the engine of Hydra's joblib launcher (make sweep)

        summaries = Parallel(n_jobs=concurrent, backend="loky")(delayed(train_one)(args, p, output_dir) for p in problems)
    total = time.perf_counter() - start
    for s in summaries:
        print(f"  problem {s['problem']}: {s['wall_s']:7.2f} s wall, {s['train_time_s']:7.2f} s in fit, {s['epochs']} epochs, {s['device']}")
    return total


def bare_steps(args: argparse.Namespace, output_dir: Path, steps: int) -> float:
    """Images/s of forward + backward + optimizer step on pre-built device batches, the config's model and precision."""
    cfg = bench_config(args, output_dir)
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    module = build_classifier(cfg, (0.5, 0.25)).to(device)
    optimizer = module.optimizer_factory(params=module.parameters(), **module.fused_option())  # as the stage decides
    module.train()
    images = torch.randn(steps, args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 2, (steps, args.batch), device=device)
    bf16 = str(cfg.trainer.precision).startswith("bf16")

    def run(n: int) -> None:
        for i in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(module(images[i % steps]), labels[i % steps])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    run(min(steps, 5))  # warm-up: kernels, allocator, compile if any
    synchronize(device)
    start = time.perf_counter()
    run(steps)
    synchronize(device)
    return steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=6, choices=range(1, 7), help="1-6: the study's problems (their mean/std)")
    parser.add_argument("--train", type=int, default=805)
    parser.add_argument("--val", type=int, default=172)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu"])
    parser.add_argument("--bare-steps", type=int, default=50, help="steps timed for the bare baseline")
    parser.add_argument("--concurrent", type=int, default=0, help="also train the problems in this many processes at once")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Hydra override (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else f"cpu ({os.cpu_count()} cores)"
    images = args.problems * args.train * args.epochs
    print(f"device: {name}; torch {torch.__version__}; {args.arch} {args.size}x{args.size}, batch {args.batch}; "
          f"{args.problems} problems x ({args.train} train + {args.val} val) x {args.epochs} epochs; overrides {args.set}")
    with tempfile.TemporaryDirectory() as tmp:
        bare = bare_steps(args, Path(tmp) / "bare", args.bare_steps)
        sequential = train_all(args, Path(tmp) / "sequential", concurrent=1)
        parallel = train_all(args, Path(tmp) / "concurrent", args.concurrent) if args.concurrent > 1 else None
    results = {"device": name, "torch": torch.__version__, "args": vars(args) | {"json": str(args.json)},
               "bare_img_s": bare, "sequential_s": sequential, "sequential_img_s": images / sequential,
               "stage_over_bare": images / sequential / bare}
    print(f"bare forward/backward/step : {bare:9.1f} img/s")
    print(f"train stage, one by one    : {sequential:9.2f} s total, {images / sequential:9.1f} img/s, "
          f"{images / sequential / bare:5.2f}x the bare step (goal >= 0.8x; total goal <= 60 s on one H200)")
    if parallel is not None:
        results |= {"concurrent": args.concurrent, "concurrent_s": parallel, "concurrent_speedup": sequential / parallel}
        print(f"train stage, {args.concurrent} at once{'':<{7 - len(str(args.concurrent))}}   : {parallel:9.2f} s total, {images / parallel:9.1f} img/s, "
              f"{sequential / parallel:5.2f}x one by one")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
