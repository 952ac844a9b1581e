"""A stage's CLI starts without the heavy libraries only some of its paths use.

Every run of every stage, a bad setting's one-line error included, pays its imports first: scikit-learn
(about 0.9 s on the project's CPU) is needed only to draw a split, albumentations (about 0.6 s) only to
build a training pipeline. They are imported where they are used, and this keeps it so (that they still
work there: tests/test_splits.py and tests/test_datamodule.py).
"""

from __future__ import annotations

import subprocess
import sys

STAGES = ("data", "train", "evaluate", "cams", "fullres", "localize", "sweep", "report", "predict", "export", "reproduce")
DEFERRED = ("sklearn", "albumentations")


def test_no_stage_imports_the_deferred_libraries() -> None:
    probe = "; ".join([f"import defectcam.stages.{stage}" for stage in STAGES] + [
        "import sys", f"print(sorted(name for name in {DEFERRED!r} if name in sys.modules))"])
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"imported at start-up: {result.stdout.strip()}"

