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


@pytest.fixture
def no_tf32():
    """float32 convolutions and matmuls on the GPU, for comparisons with the CPU.

    With TF32 (10-bit mantissa) a ResNet's maps differ from the CPU's by ~1e-3 (measured: 1.5e-3 on
    an H200), which says nothing about the CAM code; with TF32 off the two agree to float32 rounding.
    """
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_compute_cams_on_cuda_matches_cpu(no_tf32) -> None:
    import torchvision

    from defectcam.cams import compute_cams

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=2).eval()
    images = torch.randn(2, 3, 64, 64)
    cpu = compute_cams(net, images, ["layer2"], ["layercam"], output_size=(64, 64))
    gpu = compute_cams(net.cuda(), images.cuda(), ["layer2"], ["layercam"], output_size=(64, 64))
    assert gpu["layercam"]["layer2"].device.type == "cuda"
    assert torch.allclose(cpu["layercam"]["layer2"], gpu["layercam"]["layer2"].cpu(), atol=1e-4)


def test_localization_protocol_on_cuda_equals_cpu() -> None:
    """The whole per-entry protocol (exact choice, sweeps, gates, ellipse, intervals) gives the CPU's rows on CUDA."""
    from defectcam.localization import Part, Protocol, evaluate_entry

    def part(seed: int) -> Part:
        g = torch.Generator().manual_seed(seed)
        masks = torch.zeros(12, 64, 64, dtype=torch.bool)
        masks[:6, 20:30, 10:40] = True
        maps = (0.6 * torch.rand(12, 64, 64, generator=g) + 0.5 * masks).clamp(0, 1)
        return Part(maps, masks, masks.flatten(1).any(1), torch.rand(12, generator=g) > 0.3)

    def on(device: str, p: Part) -> Part:
        return Part(p.maps.to(device), p.masks.to(device), p.defective.to(device), p.predicted.to(device))

    protocol = Protocol(postprocesses=("none", "ellipse"), bootstrap=100)
    val, test = part(0), part(1)
    cpu = evaluate_entry(val, test, protocol)
    gpu = evaluate_entry(on("cuda", val), on("cuda", test), protocol)
    for ours, theirs in ((gpu.rows, cpu.rows), (gpu.images, cpu.images), (gpu.curves, cpu.curves)):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert a.keys() == b.keys()
            for key in a:  # float64 reductions may differ in the last bits between devices
                same = a[key] == b[key] if isinstance(b[key], str) else a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12, nan_ok=True)
                assert same, key


def test_device_batches_on_cuda_equal_the_host_path() -> None:
    from defectcam.data.datamodule import DefectDataModule
    from defectcam.data.device_batches import DeviceImages
    from defectcam.data.random_problem import random_problem

    data = random_problem({"val": 12}, 64, defect_every=2)
    batch = next(iter(DefectDataModule(data, 0.4, 0.2, batch_size=12).loader("val")))
    on_gpu = DeviceImages(data, 0.4, 0.2, augment=["flips"]).batch(batch["row"].cuda(), train=False)
    torch.testing.assert_close(on_gpu.cpu(), batch["image"], rtol=0, atol=1e-6)  # same float32 ops, any device


def test_gpu_training_with_device_batches_and_compile(tmp_path: Path) -> None:
    # The last.ckpt interval is tested on the CPU (test_train_speed_options.py); here the CUDA paths run end to end.
    overrides = [*tiny_overrides(tmp_path / "syn", tmp_path / "out", "[1]"), "trainer=gpu", "trainer.max_epochs=3",
                 "data.device_cache=true", "trainer.compile=default", "train.last_every_n_epochs=2"]
    for stage in ("train", "evaluate"):
        result = run_cli(stage, *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
    last = torch.load(tmp_path / "out" / "problem_1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and all(key.startswith("net.") for key in last["state_dict"])
    metrics = json.loads((tmp_path / "out" / "problem_1" / "metrics.json").read_text())
    assert metrics["device"] != "cpu" and metrics["n"] > 0  # evaluated on the GPU, as the trainer trained
