"""A stage's CLI starts without the heavy libraries only some of its paths use.

Every run of every stage, a bad setting's one-line error included, pays its imports first: scikit-learn
(about 0.9 s on the project's CPU) is needed only to draw a split, albumentations (about 0.6 s) only to
build a training pipeline. They are imported where they are used, and this keeps it so.
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


def test_the_deferred_libraries_are_imported_where_they_are_used() -> None:
    """The lazy imports still work: a split is drawn and a training pipeline is built."""
    import numpy as np
    import pandas as pd

    from defectcam.data.datamodule import train_augmentation
    from defectcam.data.splits import make_split

    table = pd.DataFrame({"problem": 1, "source_split": ["Train"] * 16 + ["Test"] * 4, "label": [0, 1] * 10})
    parts = make_split(table, "official", seed=0, val_fraction=0.25)
    assert sorted(parts.unique()) == ["test", "train", "val"]
    augment = train_augmentation(("flips", "rot90"))
    assert augment is not None
    assert augment(image=np.zeros((4, 4), np.uint8))["image"].shape == (4, 4)
