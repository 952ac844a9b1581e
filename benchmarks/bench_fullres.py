"""The full-resolution stage's costs against the classifier's, measured in one run on the same batch.

  maps     — a full-resolution map is one forward pass (defectcam.fullres.maps.defect_map, the backbone run only up
             to fullres.deepest_layer; --tta: one per transform; with the classifier's logits for the gate as well,
             defect_probabilities, the backbone runs whole)
             against compute_cams for the configured methods and layers (one forward + one backward; --cam-tta: one
             per transform, as the cams stage runs under cam.tta); in PyTorch,
             and (CPU, with defectcam[export] installed) as the exported localizer.onnx in onnxruntime, which is
             what `defectcam-predict predict.backend=onnx` runs. With --onnx-cams, compute_cams exported as well
             (its backward pass traced into the graph, as defectcam-export does for a CAM entry): both on one engine.
             Each map is timed right after a compute_cams call, repeat after repeat, and its ratio is the median of
             those pairs: on a shared machine the speed drifts by tens of percent within a minute, and a pair sees
             the same drift on both sides;
  training — one decoder training step (frozen encoder forward without a graph, decoder forward and backward, AdamW
             on the decoder; the recipe's crop and batch) against one classifier training step (forward, backward,
             AdamW on all weights; its batch), then both times the step counts of an experiment's recipes: the
             fullres stage's training / the classifier's.
With --run OUTPUT_DIR it also prints the ratio a finished run measured (fullres/selection.csv's train_time_s
against train_summary.json's).

    python benchmarks/bench_fullres.py                                  # dagm_cpu's shape: 256 px, batch 8, CPU
    python benchmarks/bench_fullres.py --size 128 --experiment quick --run outputs/quick
    python benchmarks/bench_fullres.py --channels-last                  # both sides in channels_last memory format
    python benchmarks/bench_fullres.py --tta flips --cam-tta flips --onnx-cams   # dagm_cpu's TTA, both sides exported
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from torch import Tensor, nn

from defectcam.cams.tta import tta_cams, tta_transforms
from defectcam.evaluation.latency import synchronize
from defectcam.export import OPSET
from defectcam.export.runtime import OnnxLocalizer
from defectcam.export.gradient_graph import traced_entry
from defectcam.export.writers import ONNX_PACKAGES, example_input, missing_packages, write_onnx
from defectcam.fullres.maps import defect_map, defect_probabilities
from defectcam.fullres.network import DEEPEST_LAYERS, FullResolutionNet, resnet_features
from defectcam.localization.entry_network import EntryNetwork, entry_parts
from defectcam.models.backbone import build_backbone
from defectcam.models.decoder_module import DecoderTraining
from defectcam.models.decoder_recipe import DecoderRecipe

REPO = Path(__file__).resolve().parents[1]
NORMALIZATION = (0.5, 0.25)  # the exported graph's gray -> input normalization (its cost, not its values, matters here)


def seconds(run: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of `run` (the device synchronized on both sides)."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def paired_ratios(baseline: Callable[[], None], candidates: dict[str, Callable[[], None]], repeats: int,
                  device: torch.device) -> tuple[float, dict[str, tuple[float, float]]]:
    """(median baseline seconds, {name: (median seconds, median of its ratios to the baseline call just before it)})."""
    for run in (baseline, *candidates.values()):
        run()  # warm-up
    baseline_times: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in candidates}
    ratios: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            before, after = seconds(baseline, device), seconds(run, device)
            baseline_times.append(before)
            times[name].append(after)
            ratios[name].append(after / before)
    return statistics.median(baseline_times), {name: (statistics.median(times[name]), statistics.median(ratios[name]))
                                                for name in candidates}


def onnx_map(network: FullResolutionNet, size: int, folder: Path, tta: str) -> Callable[[Tensor], object] | None:
    """The network exported as predict's localizer.onnx and loaded in onnxruntime, or None without defectcam[export]."""
    if missing_packages((*ONNX_PACKAGES, "onnxruntime")):
        return None
    path = folder / "localizer.onnx"
    # write_onnx checks onnxruntime against torch on a batch before it puts the file in place.
    # A copy: EntryNetwork freezes the network it wraps, and the decoder training step below needs this one trainable.
    copied = copy.deepcopy(network)
    parts = entry_parts("fullres", "layercam/layer2", {})
    write_onnx(EntryNetwork(copied.classifier, NORMALIZATION, parts, decoder=copied, decoder_tta=tta), path, size, OPSET,
               {"benchmark": "bench_fullres"}, parts.output_names())
    return OnnxLocalizer(path)


class AllCams(nn.Module):
    """gray -> the raw maps of every method at every layer (tta_cams, target class 1), as one tuple: compute_cams as
    an exportable network."""

    def __init__(self, net: nn.Module, methods: list[str], layers: list[str], tta: str) -> None:
        super().__init__()
        self.net, self.methods, self.layers, self.tta = net.eval().requires_grad_(False), methods, layers, tta

    def forward(self, gray: Tensor) -> tuple[Tensor, ...]:
        images = ((gray - NORMALIZATION[0]) / NORMALIZATION[1]).expand(-1, 3, -1, -1)
        with torch.enable_grad():
            maps = tta_cams(self.net, images, self.layers, self.methods, 1, self.tta).maps
        return tuple(maps[method][layer] for method in self.methods for layer in self.layers)


def onnx_cams(net: nn.Module, methods: list[str], layers: list[str], tta: str, size: int, folder: Path) -> OnnxLocalizer:
    """compute_cams of a copy of `net` exported as defectcam-export exports a CAM entry, loaded in onnxruntime."""
    network = AllCams(copy.deepcopy(net), methods, layers, tta)
    names = [f"{method}_{layer}" for method in methods for layer in layers]
    write_onnx(traced_entry(network, example_input(size)), folder / "cams.onnx", size, OPSET, {}, names, reference=network)
    return OnnxLocalizer(folder / "cams.onnx")


def recipe_steps(experiment: str, n_train: int | None) -> tuple[int, int, int, dict[str, object]]:
    """(classifier steps, classifier batch, decoder steps, the composed config) of an experiment's recipes."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"])
    train_images = n_train or (460 if cfg.data.name == "dagm" else int(cfg.data.synthetic.n_train * (1 - cfg.data.val_fraction)))
    per_epoch = math.floor(train_images / int(cfg.data.batch_size))  # drop_last
    return int(cfg.trainer.max_epochs) * per_epoch, int(cfg.data.batch_size), int(cfg.fullres.steps), cfg


def run_ratio(run: Path) -> list[str]:
    """The measured fullres-training / classifier-training ratio of each problem of a finished run."""
    lines = []
    for folder in sorted(run.glob("problem_*")):
        summary, selection = folder / "train_summary.json", folder / "fullres" / "selection.csv"
        if summary.is_file() and selection.is_file():
            classifier = float(json.loads(summary.read_text())["train_time_s"])
            decoders = float(pd.read_csv(selection)["train_time_s"].sum())
            lines.append(f"{folder.name}: fullres training {decoders:.1f} s / classifier training {classifier:.1f} s = "
                         f"{decoders / classifier:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="images of the maps comparison")
    parser.add_argument("--experiment", default="dagm_cpu", help="whose recipes give the step counts")
    parser.add_argument("--train-images", type=int, default=None, help="train-part size (default: DAGM problem 1's 460)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--run", type=Path, default=None, help="a finished run's output folder")
    parser.add_argument("--decoder-channels", type=int, nargs="+", default=None,
                        help="decoder blocks to time instead of the experiment's fullres.decoder_channels")
    parser.add_argument("--deepest-layer", default=None, choices=DEEPEST_LAYERS,
                        help="the decoder's deepest layer instead of the experiment's fullres.deepest_layer")
    parser.add_argument("--image-channels", type=int, default=None,
                        help="the input-scale branch's channels instead of the experiment's fullres.image_channels (0: none)")
    parser.add_argument("--tta", default="none", choices=["none", "flips", "dihedral"], help="the maps' fullres.tta")
    parser.add_argument("--cam-tta", default="none", choices=["none", "flips", "dihedral"],
                        help="the CAMs' cam.tta (the baseline's passes: dagm_cpu sets flips for both)")
    parser.add_argument("--onnx-cams", action="store_true",
                        help="also export compute_cams itself (backward pass traced into the graph) and time it in onnxruntime")
    parser.add_argument("--channels-last", action="store_true",
                        help="CAMs and maps both in channels_last memory format (the training steps stay contiguous)")
    args = parser.parse_args()
    device = torch.device(args.device)
    classifier_steps, _, decoder_steps, cfg = recipe_steps(args.experiment, args.train_images)
    torch.manual_seed(0)
    net = build_backbone(args.arch, "none").to(device)
    channels = args.decoder_channels or [int(c) for c in cfg.fullres.decoder_channels]
    image_channels = int(cfg.fullres.image_channels) if args.image_channels is None else args.image_channels
    deepest = args.deepest_layer or str(cfg.fullres.deepest_layer)
    try:
        network = FullResolutionNet(net, channels, image_channels, deepest_layer=deepest).to(device)
    except ValueError as error:  # e.g. the experiment's 5 blocks over --deepest-layer layer3
        parser.error(f"--decoder-channels {' '.join(map(str, channels))}: {error}")
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if args.channels_last:  # both sides of the comparison: the network holds the classifier's own modules
        network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    methods, layers = [str(m) for m in cfg.cam.methods], [str(layer) for layer in cfg.cam.layers]

    def full_resolution_map() -> None:  # what the fullres stage makes and the ungated entry scores
        with torch.no_grad():
            defect_map(network.eval(), images, args.tta)

    def gated_map() -> None:  # what predict runs for a gated entry: the classifier's logits too
        with torch.no_grad():
            defect_probabilities(network.eval(), images, args.tta)

    def encoder_forward() -> None:
        with torch.no_grad():
            resnet_features(net.eval(), images, deepest)

    def cams() -> None:  # what the cams stage runs: under cam.tta=none exactly compute_cams' one extraction
        tta_cams(net.eval(), images, layers, methods, target_class=1, tta=args.cam_tta)

    maps: dict[str, Callable[[], object]] = {"map": full_resolution_map, "encoder": encoder_forward}
    if deepest != "layer4":  # over layer4 the logits come from the map's own backbone pass: the same cost
        maps["gated"] = gated_map
    with tempfile.TemporaryDirectory(prefix="bench_fullres_") as export_dir:
        exported = onnx_map(network, args.size, Path(export_dir), args.tta) if device.type == "cpu" else None
        if exported is None and args.onnx_cams:
            print("--onnx-cams: not timed (a CPU run with defectcam[export] installed times it)")
        if exported is not None:
            gray = images[:, :1].clamp(0, 1).cpu()
            maps["onnx"] = lambda: exported(gray)
            if args.onnx_cams:
                exported_cams = onnx_cams(net, methods, layers, args.cam_tta, args.size, Path(export_dir))
                maps["onnx_cams"] = lambda: exported_cams(gray)
        cams_s, timed = paired_ratios(cams, maps, args.repeats, device)
    network.to(memory_format=torch.contiguous_format)

    # Each training step at its own recipe's batch size (the classifier's data.batch_size, the decoder's fullres.batch_size).
    classifier_batch, decoder_batch = int(cfg.data.batch_size), int(cfg.fullres.batch_size)
    classifier = build_backbone(args.arch, "none").to(device)  # a trainable copy: the decoder's classifier is frozen
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-4)
    classifier_images = torch.randn(classifier_batch, 3, args.size, args.size, device=device)
    classifier_labels = torch.arange(classifier_batch, device=device) % 2

    def classifier_step() -> None:
        classifier.train()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(classifier(classifier_images), classifier_labels).backward()
        optimizer.step()

    # The decoder step is the stage's own training_step (its crop, seeds drawn from a region around the image centre).
    recipe = DecoderRecipe(pairwise_weight=float(cfg.fullres.pairwise.weight), size_weight=float(cfg.fullres.size.weight),
                           crop=None if cfg.fullres.crop is None else int(cfg.fullres.crop))
    training = DecoderTraining(network, recipe, (0.5, 0.25), torch.zeros(0, args.size, args.size, dtype=torch.uint8), lambda probs: 0.0)
    decoder_optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-4)
    regions = torch.zeros(decoder_batch, args.size, args.size, dtype=torch.bool, device=device)
    regions[:, args.size // 3 : args.size // 2, args.size // 3 : args.size // 2] = True
    batch = {"image": torch.randint(0, 256, (decoder_batch, args.size, args.size), dtype=torch.uint8, device=device),
             "label": torch.arange(decoder_batch, device=device) % 2 == 0, "foreground": regions, "background": ~regions}
    training.log_dict = lambda *a, **k: None  # type: ignore[method-assign]  # no trainer to log to here

    def decoder_step() -> None:
        network.train()
        decoder_optimizer.zero_grad(set_to_none=True)
        training.training_step(batch, 0).backward()
        decoder_optimizer.step()

    classifier_s, steps = paired_ratios(classifier_step, {"decoder": decoder_step}, args.repeats, device)
    decoder_s, decoder_ratio = steps["decoder"]
    layout = ", channels_last" if args.channels_last else ""
    print(f"{args.arch}, batch {args.batch} at {args.size} px, {device}{layout}:")
    cam_passes = "" if args.cam_tta == "none" else f", cam.tta={args.cam_tta}: {len(tta_transforms(args.cam_tta))} passes"
    print(f"compute_cams ({len(methods)} methods x {len(layers)} layers{cam_passes}): {cams_s:.3f} s (1.00x)")
    passes = "one forward" if args.tta == "none" else f"fullres.tta={args.tta}: {len(tta_transforms(args.tta))} forwards"
    branch = f", image branch {image_channels}" if image_channels else ""
    print(f"full-resolution map ({passes}, stem..{deepest}, decoder blocks {channels}{branch}): {timed['map'][0]:.3f} s "
          f"({timed['map'][1]:.2f}x compute_cams)")
    floor = "of which the classifier's forward" if args.tta == "none" else "the classifier's forward, one pass"
    print(f"  {floor} up to {deepest} (the floor of this map in PyTorch): {timed['encoder'][0]:.3f} s "
          f"({timed['encoder'][1]:.2f}x)")
    if "gated" in timed:
        print(f"  the map with the classifier's logits too (a gated entry: the backbone runs whole): {timed['gated'][0]:.3f} s "
              f"({timed['gated'][1]:.2f}x)")
    if "onnx" in timed:
        gate = " (with the gate's logits: the backbone runs whole)" if deepest != "layer4" else ""
        print(f"  the same map exported, in onnxruntime (predict.backend=onnx){gate}: {timed['onnx'][0]:.3f} s "
              f"({timed['onnx'][1]:.2f}x compute_cams)")
    else:
        print("  the same map in onnxruntime: not timed (a CPU run with defectcam[export] installed times it)")
    if "onnx_cams" in timed:
        print(f"  compute_cams exported too, in onnxruntime: {timed['onnx_cams'][0]:.3f} s ({timed['onnx_cams'][1]:.2f}x "
              f"compute_cams); the exported map / the exported CAMs: {timed['onnx'][0] / timed['onnx_cams'][0]:.2f}x")
    crop = f", {recipe.crop} px crops" if recipe.crop and recipe.crop < args.size else ""
    print(f"classifier training step (batch {classifier_batch}): {classifier_s:.3f} s (1.00x)")
    print(f"decoder training step (batch {decoder_batch}{crop}): {decoder_s:.3f} s ({decoder_ratio:.2f}x)")
    projected = decoder_steps * decoder_ratio / classifier_steps
    print(f"{args.experiment}'s recipes: {decoder_steps} decoder steps / {classifier_steps} classifier steps -> fullres training "
          f"{projected:.2f}x the classifier's (steps only; validation passes not included)")
    for line in run_ratio(args.run) if args.run else []:
        print(f"measured in {args.run}: {line}")


if __name__ == "__main__":
    main()
