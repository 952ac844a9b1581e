"""A problem's classifier and full-resolution decoder as one deployable model (docs/export.md).

Pure torch + onnx (no Hydra, no Lightning): the graph over gray images (`graph.py`), the writers of the ONNX and
torch.export files with their metadata (`writers.py`) and the ONNX file in onnxruntime (`runtime.py`). Nothing is
imported here, so that predict can read the names below without importing onnx.
"""

# ONNX opset of the exported graph, pinned so a re-export writes the same operators; 18 is the lowest the
# torch.export-based exporter emits natively (a lower one goes through onnx's version converter).
OPSET = 18
EXPORT_FORMAT = 1  # the layout of the metadata; bumped when a key changes meaning
FOLDER = "export"  # problem_<k>/export/
FILES = {"onnx": "localizer.onnx", "torch": "localizer.pt2"}
SIDECAR = "localizer.json"
INPUT_NAME = "gray"
OUTPUT_NAMES = ("logit_margin", "defect_probability")
