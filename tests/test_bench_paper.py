"""benchmarks/bench_paper_gpu.py runs the train stage's code path on random data (a tiny CPU smoke run)."""

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
