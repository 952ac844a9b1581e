"""Training survives kill -9 (resumes from last.ckpt), skips finished problems, and runs DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, REPO, run_cli, tiny_overrides


@pytest.mark.parametrize("async_checkpoints", ["false", "true"])
def test_resume_after_kill_9(tmp_path: Path, async_checkpoints: str) -> None:
    overrides = [*tiny_overrides(tmp_path / "syn", tmp_path / "out", "[1]"), "trainer.max_epochs=4",
                 f"train.async_checkpoints={async_checkpoints}"]
    last = tmp_path / "out" / "problem_1" / "checkpoints" / "last.ckpt"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    process = subprocess.Popen([str(BIN / "defectcam-train"), *overrides], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert last.is_file(), "training never wrote last.ckpt"
    summary = tmp_path / "out" / "problem_1" / "train_summary.json"
    assert not summary.exists(), "killed too late: training had already finished"
    epoch_at_kill = torch.load(last, weights_only=False, map_location="cpu")["epoch"]

    result = run_cli("train", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stdout + result.stderr
    done = json.loads(summary.read_text())
    assert done["epochs"] == 4 and epoch_at_kill < 4
    assert done["train_time_s"] > 0

    again = run_cli("train", *overrides)  # finished: skipped
    assert "already trained" in again.stdout + again.stderr
    assert json.loads(summary.read_text()) == done


def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    overrides = tiny_overrides(tmp_path / "syn", tmp_path / "out", "[1]")
    result = run_cli("train", *overrides, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "problem_1" / "train_summary.json").read_text())
    assert summary["device"].endswith("x2")
    assert (tmp_path / "out" / "problem_1" / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.parametrize(("variable", "value", "stages"), [
    ("LOCAL_RANK", "1", ["data", "train"]), ("RANK", "3", ["data", "train"]), ("NODE_RANK", "1", ["data", "train"]),
    ("LOCAL_RANK", "0", ["data", "train", "evaluate", "cams", "fullres", "localize", "report"])])
def test_a_relaunched_ddp_rank_stops_reproduce_after_training(compose_cfg, monkeypatch, variable: str, value: str,
                                                               stages: list[str]) -> None:
    # Lightning relaunches the whole command for each extra rank; each once ran every later stage beside rank 0.
    from defectcam.stages import reproduce

    ran: list[str] = []
    monkeypatch.setattr(reproduce, "STAGES", tuple((name, lambda cfg, name=name: ran.append(name)) for name, _ in reproduce.STAGES))
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    reproduce.run_reproduce(compose_cfg())
    assert ran == stages
