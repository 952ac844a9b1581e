"""An entry that needs gradients (a CAM, a fusion, a product) as one graph of plain ATen operators, ready to export.

`torch.export` records a forward pass; a CAM also differentiates the class score with respect to a layer's output.
`make_fx` records the whole computation, the `torch.autograd.grad` call included, as the operators autograd runs.
The core ATen decompositions reduce those to operators the ONNX exporter translates, all but one:
`aten.convolution_backward`, decomposed here. The weights are frozen, so only the gradient of the convolution's
input is needed, and that is the transposed convolution of the output's gradient with the same weight, stride,
padding, dilation and groups, plus the output padding that gives back the input's exact size (a strided
convolution maps several input sizes to one output size).

Every dimension is traced symbolically (`tracing_mode="symbolic"`); the exporters then keep only the batch one free,
so the graph takes any batch at the traced image size. That works only with the parameters and
buffers as inputs of the traced function (`torch.func.functional_call`); `TracedEntry` holds them and feeds them
in, so `torch.export` and the ONNX exporter see a module of one input whose weights are constants again.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.experimental.proxy_tensor import make_fx

from defectcam.errors import ModelError


def convolution_input_gradient(grad_output: Tensor, inputs: Tensor, weight: Tensor, bias_sizes: Sequence[int] | None,
                               stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], transposed: bool,
                               output_padding: Sequence[int], groups: int,
                               output_mask: Sequence[bool]) -> tuple[Tensor, None, None]:
    """aten.convolution_backward of a frozen 2-D convolution: (d input, no weight gradient, no bias gradient)."""
    if transposed or inputs.ndim != 4 or output_mask[1] or output_mask[2]:
        raise ModelError("export: only the input gradient of a frozen, not transposed 2-D convolution can be traced "
                         f"(transposed {transposed}, {inputs.ndim - 2}-D, weight/bias gradients {list(output_mask[1:])})")
    kernel = weight.shape[2:]
    # conv_transpose2d gives (g - 1) s - 2 p + d (k - 1) + 1 per side; the output padding makes up the rest
    extra = [size - ((g - 1) * s - 2 * p + d * (k - 1) + 1)
             for size, g, s, p, d, k in zip(inputs.shape[2:], grad_output.shape[2:], stride, padding, dilation, kernel)]
    grad_input = F.conv_transpose2d(grad_output, weight, None, list(stride), list(padding), extra, groups, list(dilation))
    return grad_input, None, None


def decompositions() -> dict[object, object]:
    """The core ATen decompositions, plus the frozen convolution's input gradient."""
    table = dict(torch._decomp.core_aten_decompositions())
    table[torch.ops.aten.convolution_backward.default] = convolution_input_gradient
    return table


class TracedEntry(nn.Module):
    """gray (N, 1, S, S) -> the traced network's outputs; the traced graph's parameters and buffers held as buffers."""

    def __init__(self, graph: fx.GraphModule, names: list[str], state: list[Tensor]) -> None:
        super().__init__()
        self.graph_module = graph
        self.eval()  # nothing in it depends on the mode; torch.export warns about a module left in training mode
        self.state_names = [name.replace(".", "__") for name in names]  # buffer names cannot hold dots
        for name, tensor in zip(self.state_names, state):
            self.register_buffer(name, tensor)

    def forward(self, gray: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.graph_module(gray, *(getattr(self, name) for name in self.state_names)))


def traced_entry(network: nn.Module, example: Tensor) -> TracedEntry:
    """`network` (gray -> tuple of outputs, backward pass inside) traced on `example` with a symbolic batch."""
    # Tied modules (a decoder's classifier is the classifier) are named once: functional_call ties them back.
    state = {name: tensor.detach() for name, tensor in chain(network.named_parameters(), network.named_buffers())}
    names = list(state)

    def run(gray: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        return torch.func.functional_call(network, dict(zip(names, tensors)), (gray,))

    graph = make_fx(run, decomposition_table=decompositions(), tracing_mode="symbolic")(example, *state.values())
    return TracedEntry(graph, names, list(state.values()))
