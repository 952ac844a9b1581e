"""GPU-only checks (deselected by default; run with `pytest -m gpu` on a machine with CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_overrides

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_gpu_training_bf16_channels_last(tmp_path: Path) -> None:
    overrides = [*tiny_overrides(tmp_path / "syn", tmp_path / "out", "[1]"), "trainer=gpu", "data.image_size=64",
                 "data.synthetic.image_size=64"]
    for stage in ("train", "evaluate", "cams"):
        result = run_cli(stage, *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "problem_1" / "train_summary.json").read_text())
    assert summary["precision"] == "bf16-mixed" and "cpu" not in summary["device"]


def test_compute_cams_on_cuda_matches_cpu() -> None:
    import torchvision

    from defectcam.cams import compute_cams

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=2).eval()
    images = torch.randn(2, 3, 64, 64)
    cpu = compute_cams(net, images, ["layer2"], ["layercam"], output_size=(64, 64))
    gpu = compute_cams(net.cuda(), images.cuda(), ["layer2"], ["layercam"], output_size=(64, 64))
    assert gpu["layercam"]["layer2"].device.type == "cuda"
    assert torch.allclose(cpu["layercam"]["layer2"], gpu["layercam"]["layer2"].cpu(), atol=1e-3)
