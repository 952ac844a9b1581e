"""An exported localizer on the CPU: localizer.onnx in onnxruntime, after checking its metadata against what it must
stand for, or localizer.pt2 (torch.export's program) in PyTorch, which needs no extra package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from defectcam.errors import ConfigError, ModelError, StaleInputError, one_line
from defectcam.export import INPUT_NAME, SIDECAR


def metadata_text(value: Any) -> str:
    """A metadata value as ONNX metadata_props hold it: a string as it is, anything else as JSON (floats round-trip)."""
    return value if isinstance(value, str) else json.dumps(value)


def onnx_session(path: Path) -> Any:
    """An onnxruntime InferenceSession of `path` on the CPU, with as many threads as torch uses here."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"{path}: running it needs onnxruntime; pip install 'defectcam[export]'") from None
    options = onnxruntime.SessionOptions()
    # torch's count follows OMP_NUM_THREADS and torch.set_num_threads; onnxruntime would take every core.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own (a truncated or foreign file): one line naming the file
        raise ModelError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {one_line(exc, 200)})") from exc


class OnnxLocalizer:
    """An exported localizer in onnxruntime: gray (N, 1, S, S) in [0, 1] -> its outputs, in the file's order (or
    `output_names`' order): the logit margins (N,), then the probabilities (N, S, S) and/or raw CAMs (N, h, w)."""

    def __init__(self, path: Path, session: Any | None = None, output_names: list[str] | None = None) -> None:
        self.path = Path(path)
        self.session = session if session is not None else onnx_session(self.path)
        self.output_names = [output.name for output in self.session.get_outputs()] if output_names is None else output_names

    @property
    def inputs(self) -> list[tuple[str, list[Any]]]:
        """The graph's inputs as (name, shape); a free dimension by its name (the batch: 'batch')."""
        return [(i.name, list(i.shape)) for i in self.session.get_inputs()]

    @property
    def metadata(self) -> dict[str, str]:
        """The file's metadata_props (strings, JSON for anything not a string)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, gray: Tensor) -> tuple[Tensor, ...]:
        try:
            outputs = self.session.run(self.output_names, {INPUT_NAME: gray.detach().float().cpu().contiguous().numpy()})
        except Exception as exc:  # onnxruntime's own (an input the graph does not take): one line naming the file
            raise ModelError(f"{self.path}: onnxruntime could not run it on a batch of {list(gray.shape)} "
                             f"({type(exc).__name__}: {one_line(exc, 200)})") from exc
        return tuple(torch.from_numpy(output) for output in outputs)


class ProgramLocalizer:
    """An exported localizer.pt2 (torch.export's program, its metadata as the extra file localizer.json) in PyTorch on
    the CPU, called as OnnxLocalizer is: gray (N, 1, S, S) in [0, 1] -> its outputs, in the metadata's order.

    The program is the graph the ONNX file was translated from (a CAM's backward pass traced into it), so it needs
    neither onnxruntime nor autograd."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        extra = {SIDECAR: ""}
        try:
            program = torch.export.load(str(self.path), extra_files=extra)
        except Exception as exc:  # torch's own (a truncated or foreign file): one line naming the file
            raise ModelError(f"{self.path}: torch.export cannot load it ({type(exc).__name__}: {one_line(exc, 200)})") from exc
        try:
            stored = json.loads(extra[SIDECAR])
        except ValueError:
            stored = None
        if not isinstance(stored, dict):
            raise ModelError(f"{self.path}: its {SIDECAR} is missing or not a JSON object; re-export it with defectcam-export")
        self.metadata = {str(key): metadata_text(value) for key, value in stored.items()}
        # The program names no outputs: they are the metadata's, when their count is the program's (else positional
        # names, which no entry is made of, so predict.model refuses the file with its own line).
        named, count = [str(name) for name in stored.get("output_names", [])], len(program.graph_signature.user_outputs)
        self.output_names = named if len(named) == count else [f"output_{i}" for i in range(count)]
        self.inputs = [(node.name, [dim if isinstance(dim, int) else "batch" for dim in node.meta["val"].shape])
                       for node in program.graph.nodes
                       if node.op == "placeholder" and node.name in program.graph_signature.user_inputs]
        self.module = program.module()

    def __call__(self, gray: Tensor) -> tuple[Tensor, ...]:
        try:
            with torch.no_grad():
                outputs = self.module(gray.detach().float().cpu().contiguous())
        except Exception as exc:  # a guard of the program (a size it was not exported for): one line naming the file
            raise ModelError(f"{self.path}: its program could not run on a batch of {list(gray.shape)} "
                             f"({type(exc).__name__}: {one_line(exc, 200)})") from exc
        return tuple(output.detach() for output in outputs)


def load_onnx_localizer(path: Path, expected: dict[str, Any], output_names: list[str]) -> OnnxLocalizer:
    """localizer.onnx in onnxruntime, once its metadata holds every `expected` value (else one line naming the first
    that differs: the file was exported for another entry, threshold, best.ckpt, decoder or CAM setting) and its
    outputs are `output_names`."""
    localizer = OnnxLocalizer(path)
    stored = localizer.metadata
    for key, value in expected.items():
        if stored.get(key) != metadata_text(value):
            raise StaleInputError(f"{path}: exported with {key}={stored.get(key)!r}, but predict now has "
                                  f"{metadata_text(value)!r}; re-export it (make export) with the same predict.entry/gate/postprocess")
    if sorted(localizer.output_names) != sorted(output_names):
        raise StaleInputError(f"{path}: its outputs are {', '.join(localizer.output_names)}, predict needs "
                              f"{', '.join(output_names)}; re-export it (make export)")
    localizer.output_names = list(output_names)
    return localizer
