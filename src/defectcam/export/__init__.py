"""A problem's localizer (its classifier with the decoder and/or CAMs of one entry) as one deployable model
(docs/export.md).

Pure torch + onnx (no Hydra, no Lightning): the traced graph of an entry that needs gradients (`gradient_graph.py`),
the writers of the ONNX and torch.export files with their metadata (`writers.py`) and the ONNX file in onnxruntime
(`runtime.py`). The network itself is localization/entry_network.py, the one predict runs. Nothing is imported
here, so that predict can read the names below without importing onnx.
"""

# ONNX opset of the exported graph, pinned so a re-export writes the same operators; 18 is the lowest the
# torch.export-based exporter emits natively (a lower one goes through onnx's version converter).
OPSET = 18
EXPORT_FORMAT = 2  # the layout of the metadata; bumped when a key changes meaning (2: CAM and product entries)
FOLDER = "export"  # problem_<k>/export/
FILES = {"onnx": "localizer.onnx", "torch": "localizer.pt2"}
SIDECAR = "localizer.json"
INPUT_NAME = "gray"  # the outputs are named by localization/entry_network.py (EntryParts.output_names)
