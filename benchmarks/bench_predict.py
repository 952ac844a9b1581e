"""defectcam-predict's throughput against a bare classifier forward on the same batch.

Timed in one run, each several times on the same images (a random-init ResNet at the quick experiment's size):
  bare     — the classifier's forward alone, in inference mode (the floor: what a classification-only tool pays);
  predict  — what defectcam-predict does per batch: resize and normalize, one CAM pass (forward + backward to the
             entry's layer), the entry's scoring map at each image's own size, the val-chosen threshold and gate,
             and the mask and overlay PNGs written (predict.stages.Predictor + write_outputs).
Prints images/s of each and predict / bare. Then a product entry's two maps (fullres_x_<cam>: the decoder's
probabilities and a CAM, `--tta` averaged) on the network-size batch, timed both ways in the same run:
  apart    — the decoder's pass (defect_probabilities) and the CAM's pass (tta_cams), as before 2026-12-06;
  shared   — what predict now does: one classifier pass per transform feeds both (fullres/shared_pass.py).
Prints shared / apart. With --onnx (CPU, needs defectcam[export]), the product entry's whole network (gray images
in, margin, probabilities and raw CAM out: localization/entry_network.py) exported as `make export` writes it, its
backward pass traced into the graph, timed in onnxruntime against the same network in eager PyTorch; prints
onnx / eager and the export's own time.

    python benchmarks/bench_predict.py                         # CPU, ResNet-50, 16 images of 512 px (DAGM's size)
    python benchmarks/bench_predict.py --device cuda --images 64
    python benchmarks/bench_predict.py --size 256 --images 8 --tta flips     # dagm_cpu's input size and TTA
    python benchmarks/bench_predict.py --size 256 --images 8 --tta flips --onnx
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from defectcam.cams.tta import tta_cams
from defectcam.evaluation.latency import synchronize
from defectcam.fullres.maps import defect_probabilities
from defectcam.fullres.network import FullResolutionNet
from defectcam.fullres.shared_pass import product_sources
from defectcam.localization.entry_network import EntryNetwork, entry_parts
from defectcam.models.backbone import build_backbone
from defectcam.stages.predict import Entry, Predictor, write_outputs


def median_seconds(run, repeats: int, device: torch.device) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--native", type=int, default=512, help="the new images' own size (masks are written at it)")
    parser.add_argument("--size", type=int, default=128, help="the network's input size (data.image_size)")
    parser.add_argument("--layer", default="layer2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tta", default="none", choices=("none", "flips", "dihedral"), help="the product's TTA set")
    parser.add_argument("--onnx", action="store_true", help="also time the exported product in onnxruntime (CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_backbone(args.arch, "none").to(device).eval()
    images = [np.random.default_rng(i).integers(0, 255, (args.native, args.native), dtype=np.uint8) for i in range(args.images)]
    entry = Entry("layercam", args.layer, "none", "classifier", 0.5)
    parts = entry_parts(entry.method, entry.layer, {})
    predictor = Predictor(EntryNetwork(net, (0.5, 0.25), parts), parts, entry, 0.0, args.size, {}, device)
    batch = torch.randn(args.images, 3, args.size, args.size, device=device)

    def bare() -> None:
        with torch.inference_mode():
            net(batch)

    with tempfile.TemporaryDirectory() as folder:
        def predict() -> None:
            for k, (heat, mask, margin, defect) in enumerate(predictor(images)):
                write_outputs(Path(folder), f"i{k}", Path(f"i{k}.png"), images[k], heat, mask, margin, defect, entry, 1, 0.0)

        bare_s = median_seconds(bare, args.repeats, device)
        predict_s = median_seconds(predict, args.repeats, device)
    n = args.images
    print(f"{args.arch}, {n} images of {args.native} px -> {args.size} px, entry layercam {args.layer}, {device}:")
    print(f"bare forward: {n / bare_s:.1f} img/s (1.00x)")
    print(f"predict: {n / predict_s:.1f} img/s ({bare_s / predict_s:.2f}x bare)")

    decoder = FullResolutionNet(net).to(device).eval()  # net is frozen already (EntryNetwork, above)

    def apart() -> None:
        with torch.no_grad():
            defect_probabilities(decoder, batch, args.tta)
        tta_cams(net, batch, [args.layer], ["gradcampp"], 1, args.tta)

    def shared() -> None:
        product_sources(decoder, batch, "gradcampp", args.layer, 1, args.tta)

    apart_s = median_seconds(apart, args.repeats, device)
    shared_s = median_seconds(shared, args.repeats, device)
    print(f"product maps (fullres_x_gradcampp {args.layer}, tta {args.tta}, {n} images of {args.size} px): "
          f"a pass each {apart_s:.3f} s, one shared pass {shared_s:.3f} s ({shared_s / apart_s:.2f}x)")
    if args.onnx:
        time_exported_product(decoder, args, device)


def time_exported_product(decoder: FullResolutionNet, args: argparse.Namespace, device: torch.device) -> None:
    """The product entry's network exported (traced, backward pass included) against itself in eager PyTorch."""
    from defectcam.export import OPSET
    from defectcam.export.gradient_graph import traced_entry
    from defectcam.export.runtime import OnnxLocalizer
    from defectcam.export.writers import example_input, write_onnx

    if device.type != "cpu":
        raise SystemExit("--onnx: onnxruntime runs on the CPU here; leave --device out")
    parts = entry_parts("fullres_x_gradcampp", args.layer, {})
    network = EntryNetwork(decoder.classifier, (0.5, 0.25), parts, 1, args.tta, decoder, args.tta)
    gray = torch.rand(args.images, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_onnx(traced_entry(network, example_input(args.size)), Path(folder) / "l.onnx", args.size, OPSET, {},
                   parts.output_names(), reference=network)  # checked against eager PyTorch before it is kept
        export_s = time.perf_counter() - start
        exported = OnnxLocalizer(Path(folder) / "l.onnx")
        eager_s = median_seconds(lambda: network(gray), args.repeats, device)
        onnx_s = median_seconds(lambda: exported(gray), args.repeats, device)
    print(f"exported product (margin, probabilities, raw CAM; tta {args.tta}, {args.images} images of {args.size} px): "
          f"eager PyTorch {eager_s:.3f} s, onnxruntime {onnx_s:.3f} s ({onnx_s / eager_s:.2f}x); "
          f"tracing, export and check {export_s:.1f} s")


if __name__ == "__main__":
    main()
