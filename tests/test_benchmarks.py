"""Benchmarks that the suite runs in small (CPU smoke runs): they must keep working, their numbers are not judged here."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]


def test_paper_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_script(ROOT / "benchmarks" / "bench_paper_gpu.py", "--problems", "2", "--train", "16", "--val", "8",
                        "--epochs", "1", "--size", "32", "--arch", "resnet18", "--bare-steps", "2", "--device", "cpu",
                        "--set", "train.last_every_n_epochs=2", "--json", str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(out.read_text())
    assert numbers["sequential_s"] > 0 and numbers["bare_img_s"] > 0 and numbers["device"].startswith("cpu")
    # both problems went through the train stage: its summary line per problem, with the epochs it trained
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("problem")]
    assert [line.split(":")[0].strip() for line in lines] == ["problem 1", "problem 2"]
    assert all("1 epochs" in line and "s in fit" in line for line in lines)


def test_checkpoint_benchmark_times_three_writers(tmp_path: Path) -> None:
    result = run_script(ROOT / "benchmarks" / "bench_checkpoint.py", "--arch", "resnet18", "--repeats", "1", "--dir", str(tmp_path),
                        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split(":")[0].strip() for line in result.stdout.splitlines()[1:]]
    assert rows == ["lightning", "atomic", "async"]
    assert "1.00x lightning" in result.stdout.splitlines()[1]


def run_benchmark(name: str, *args: str) -> list[str]:
    """A benchmark script's stdout lines (it must exit 0)."""
    result = run_script(ROOT / "benchmarks" / name, *args, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_predict_benchmark_prints_both_rates() -> None:
    lines = run_benchmark("bench_predict.py", "--arch", "resnet18", "--images", "2", "--native", "48", "--size", "32", "--repeats", "1",
                          "--onnx")
    assert lines[1].startswith("bare forward:") and "(1.00x)" in lines[1]
    assert lines[2].startswith("predict:") and "x bare)" in lines[2]
    assert lines[3].startswith("product maps (fullres_x_gradcampp ") and "one shared pass" in lines[3]
    # --onnx: the product entry exported (checked against eager PyTorch first) and timed in onnxruntime
    assert lines[4].startswith("exported product (") and "onnxruntime" in lines[4] and "tracing, export and check" in lines[4]


def test_fullres_benchmark_times_the_decoder_it_is_given() -> None:
    lines = run_benchmark("bench_fullres.py", "--arch", "resnet18", "--size", "32", "--batch", "2", "--repeats", "1",
                          "--experiment", "quick", "--decoder-channels", "16", "8", "8", "--tta", "flips", "--image-channels", "4",
                          "--cam-tta", "flips")
    # One run for every line: each export and timing costs tens of seconds of the suite.
    assert lines[1].startswith("compute_cams (3 methods x 4 layers, cam.tta=flips: 4 passes): ") and "(1.00x)" in lines[1]
    assert lines[2].startswith("full-resolution map (fullres.tta=flips: 4 forwards, stem..layer4, decoder blocks [16, 8, 8], "
                               "image branch 4):")
    assert "x compute_cams)" in lines[2]
    assert lines[3].startswith("  the classifier's forward, one pass up to layer4 (the floor of this map in PyTorch):")
    # the suite installs defectcam[export], so the exported map is timed in onnxruntime too (after a check against torch)
    assert lines[4].startswith("  the same map exported, in onnxruntime (predict.backend=onnx):") and "x compute_cams)" in lines[4]
    assert lines[5].startswith("classifier training step (batch 16)") and "(1.00x)" in lines[5]
    assert lines[6].startswith("decoder training step (batch 8") and lines[7].startswith("quick's recipes: 200 decoder steps")


def test_fullres_benchmark_exports_the_cams_it_compares_with() -> None:
    # The smallest decoder and no TTA: added to the run above (cam.tta=flips), --onnx-cams tripled it (RESULTS.md).
    lines = run_benchmark("bench_fullres.py", "--arch", "resnet18", "--size", "32", "--batch", "2", "--repeats", "1",
                          "--experiment", "quick", "--decoder-channels", "8", "--image-channels", "0", "--onnx-cams",
                          "--deepest-layer", "layer3")
    assert lines[1].startswith("compute_cams (3 methods x 4 layers): ") and "(1.00x)" in lines[1]
    assert lines[2].startswith("full-resolution map (one forward, stem..layer3, decoder blocks [8]): ")
    assert lines[3].startswith("  of which the classifier's forward up to layer3 (the floor of this map in PyTorch): ")
    # a decoder over fewer stages: the map alone runs the classifier that far, the gate's logits run it whole
    assert lines[4].startswith("  the map with the classifier's logits too (a gated entry: the backbone runs whole): ")
    assert lines[5].startswith("  the same map exported, in onnxruntime (predict.backend=onnx) (with the gate's logits")
    # --onnx-cams: compute_cams exported (backward pass inside the graph) and timed beside the exported map
    assert lines[6].startswith("  compute_cams exported too, in onnxruntime: ") and "x compute_cams)" in lines[6]
    assert "the exported map / the exported CAMs: " in lines[6]


def test_reference_speed_prints_images_per_second() -> None:
    """The unit of every time budget: one positive number, images per second."""
    (line,) = run_benchmark("reference_speed.py", "1")
    assert float(line) > 0
