"""Writers of an exported localizer, each file atomic: ONNX with its metadata in metadata_props (checked in
onnxruntime against torch before it is put in place), torch.export's .pt2, and a JSON sidecar repeating the metadata.

Why torch.export and not TorchScript for the PyTorch file: torch.jit.trace/script are deprecated in this torch
(FutureWarning: "switch to torch.compile or torch.export"), and torch.export's program is the very graph the ONNX
exporter below translates, so the two files come from one tracing path.

Why the torch.export-based ONNX exporter (dynamo=True) and not the legacy TorchScript one: the legacy exporter is
deprecated since torch 2.9 and, on this graph, labels the probability output's shape wrongly ([batch, batch, ...]);
the dynamo exporter runs offline (it needs onnxscript, no network), names the batch dimension from torch.export's
Dim and writes the opset asked for.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from defectcam.cams.normalize import minmax
from defectcam.errors import ConfigError, ModelError, one_line
from defectcam.export import INPUT_NAME, OPSET, SIDECAR
from defectcam.export.runtime import OnnxLocalizer, metadata_text
from defectcam.io import atomic_path, write_json
from defectcam.localization.entry_network import MARGIN, PROBABILITY

log = logging.getLogger(__name__)
TOLERANCE = 1e-4  # largest difference allowed between onnxruntime and torch: probabilities, margins (relative past 1)
# A raw CAM is compared as predict thresholds it, min-max normalized per image. Gradients are not smooth: where a
# pre-activation sits within float32 rounding of zero, a ReLU passes or blocks the gradient depending on the order of
# a sum, so two float32 engines differ locally. On real DAGM problem 1 (seed 0's ResNet-50, 8 test images, 12 method x
# layer maps) PyTorch float32 itself differs from float64 by up to 1.1e-2 of a map's peak (LayerCAM at layer1), and
# onnxruntime from PyTorch by a mean of at most 2.8e-4 with at most 1.6e-4 of the pixels more than 1e-2 apart. A bug
# (a wrong transform, a wrong padding) moves whole maps: the mean and the share below catch it, the local
# differences pass.
CAM_MEAN_TOLERANCE = 1e-3  # the mean absolute difference of the normalized maps
CAM_SHARE_TOLERANCE = 1e-3  # the share of their pixels more than CAM_LOCAL_STEP apart
CAM_LOCAL_STEP = 1e-2
TRACE_BATCH, CHECK_BATCH = 2, 3  # the check batch differs from the traced one: it exercises the dynamic batch dimension


def example_input(image_size: int, batch: int = TRACE_BATCH) -> Tensor:
    """A (batch, 1, S, S) gray example to trace with (its values do not matter: the graph has no data-dependent branch)."""
    return torch.full((batch, 1, image_size, image_size), 0.5)


def batch_dimension() -> dict[str, dict[int, Any]]:
    """dynamic_shapes of the one input: the batch dimension free (size 1 included), the image size fixed."""
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}}


def write_program(localizer: nn.Module, path: Path, image_size: int, metadata: dict[str, Any]) -> None:
    """torch.export's program of `localizer` -> `path` (.pt2, the metadata inside as extra file `localizer.json`)."""
    with torch.no_grad():
        program = torch.export.export(localizer, (example_input(image_size),), dynamic_shapes=batch_dimension())
    # An open handle: torch.export.save warns about a file name not ending in .pt2 (atomic_path's temp name).
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.export.save(program, handle, extra_files={SIDECAR: json.dumps(metadata)})


ONNX_PACKAGES = ("onnx", "onnxscript")  # what the ONNX exporter imports (onnxruntime only checks and runs the graph)


def missing_packages(names: Sequence[str]) -> list[str]:
    """Those of `names` that are not installed (found without importing them: onnx takes seconds to import)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def check_onnx_packages(key: str = "export.formats") -> None:
    """One line when the ONNX exporter's packages (onnx, onnxscript) are missing."""
    missing = missing_packages(ONNX_PACKAGES)
    if missing:
        raise ConfigError(f"{key}: onnx needs {' and '.join(missing)}; pip install 'defectcam[export]', or {key}=[torch]")


def write_onnx(localizer: nn.Module, path: Path, image_size: int, opset: int, metadata: dict[str, Any],
               output_names: list[str], reference: Callable[[Tensor], tuple[Tensor, ...]] | None = None) -> dict[str, Any]:
    """`localizer` as ONNX at `opset` (batch dimension free, outputs `output_names`, metadata in metadata_props) ->
    `path`, once onnxruntime agrees with `reference` (default: `localizer` itself) on a check batch; returns the
    check's numbers (empty when onnxruntime is missing)."""
    check_onnx_packages()
    # onnxscript's optimizer logs every pass at INFO, which would bury the stage's own lines.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(localizer, (example_input(image_size),), dynamo=True, opset_version=opset,
                                input_names=[INPUT_NAME], output_names=list(output_names), dynamic_shapes=batch_dimension(),
                                external_data=False, verbose=False)
    program.model.metadata_props.update({key: metadata_text(value) for key, value in metadata.items()})
    with atomic_path(path) as tmp:
        program.save(tmp, external_data=False)  # one file: a ResNet-101 with its decoder stays far below protobuf's 2 GB
        return check_onnx(tmp, reference or localizer, image_size, path, output_names)


def check_onnx(tmp: Path, reference: Callable[[Tensor], tuple[Tensor, ...]], image_size: int, path: Path,
               output_names: list[str]) -> dict[str, Any]:
    """The written ONNX file (`tmp`, to become `path`) against torch on a seeded batch -> its largest differences;
    ModelError beyond the tolerances. Skipped (logged) without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        log.warning("%s: onnxruntime is not installed; the exported graph was not checked against torch", path)
        return {}
    gray = torch.rand(CHECK_BATCH, 1, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # an entry with CAMs turns gradients on inside, where it needs them
        wanted = [output.detach().float() for output in reference(gray)]
    try:
        got = OnnxLocalizer(tmp, output_names=list(output_names))(gray)
    except Exception as exc:  # onnxruntime raises its own types (an opset or operator it does not know)
        raise ModelError(f"{path}: onnxruntime cannot run the exported graph ({one_line(exc)}); "
                         f"export.opset={OPSET} is the tested one") from None
    check: dict[str, Any] = {"images": CHECK_BATCH}
    limits = []  # (measured, allowed)
    for name, want, have in zip(output_names, wanted, got, strict=True):
        difference = (have - want).abs()
        if name == MARGIN:  # logits (tens on a confident model): float32 rounding grows with them, so relative past 1
            check["max_margin_difference"] = float(difference.max())
            limits.append((float((difference / want.abs().clamp(min=1.0)).max()), TOLERANCE))
        elif name == PROBABILITY:
            check["max_probability_difference"] = float(difference.max())
            limits.append((check["max_probability_difference"], TOLERANCE))
        else:  # a raw CAM, normalized as predict does (a map flat in torch must stay flat: min-max would blow up noise)
            normalized = (minmax(have) - minmax(want)).abs()
            check[f"{name}_mean_difference"] = float(normalized.mean())
            check[f"{name}_max_difference"] = float(normalized.max())
            check[f"{name}_share_over_{CAM_LOCAL_STEP:g}"] = share = float((normalized > CAM_LOCAL_STEP).float().mean())
            limits += [(check[f"{name}_mean_difference"], CAM_MEAN_TOLERANCE), (share, CAM_SHARE_TOLERANCE)]
    if not all(measured <= allowed for measured, allowed in limits):  # written so that a NaN fails too
        raise ModelError(f"{path}: onnxruntime differs from torch on a check batch ({check}); not written")
    return check


def write_sidecar(path: Path, metadata: dict[str, Any], files: dict[str, str], check: dict[str, Any]) -> None:
    """The JSON sidecar: the metadata (typed), the files written and the ONNX check's numbers."""
    write_json(path, {**metadata, "files": files, "onnx_check": check})
