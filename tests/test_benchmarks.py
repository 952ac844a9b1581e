"""Benchmarks that the suite runs in small (CPU smoke runs): they must keep working, their numbers are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_paper_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_paper_gpu.py"), "--problems", "2", "--train", "16", "--val", "8",
         "--epochs", "1", "--size", "32", "--arch", "resnet18", "--bare-steps", "2", "--device", "cpu",
         "--set", "train.last_every_n_epochs=2", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(out.read_text())
    assert numbers["sequential_s"] > 0 and numbers["bare_img_s"] > 0 and numbers["device"].startswith("cpu")
    # both problems went through the train stage: its summary line per problem, with the epochs it trained
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("problem")]
    assert [line.split(":")[0].strip() for line in lines] == ["problem 1", "problem 2"]
    assert all("1 epochs" in line and "s in fit" in line for line in lines)


def test_checkpoint_benchmark_times_three_writers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_checkpoint.py"), "--arch", "resnet18", "--repeats", "1", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split(":")[0].strip() for line in result.stdout.splitlines()[1:]]
    assert rows == ["lightning", "atomic", "async"]
    assert "1.00x lightning" in result.stdout.splitlines()[1]
