"""A stage's CLI starts without the heavy libraries only some of its paths use.

Every run of every stage, a bad setting's one-line error included, pays its imports and the validation of its
settings first. scikit-learn (about 0.9 s on the project's CPU) is needed only to draw a split, albumentations
(about 0.6 s) only to build a training pipeline, matplotlib with TensorBoard's writer (about 0.9 s) only to draw,
and Lightning with the torchvision it imports (about 3 s) only
where a stage trains, or loads a classifier or a DataModule. They are imported where they are used, and
validation checks the usual cam.layers without building a torchvision network; this keeps it so (that they
still work there: tests/test_splits.py, tests/test_datamodule.py, the stage tests).
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

STAGES = ("data", "train", "evaluate", "cams", "fullres", "localize", "sweep", "report", "predict", "export", "reproduce")
DEFERRED = ("sklearn", "albumentations")
# Lightning imports matplotlib itself: train and reproduce have it from there.
DRAWING = ("matplotlib", "tensorboard")
# Training is what train and reproduce are for: they import Lightning up front.
TRAINING_LIBRARIES = ("pytorch_lightning", "lightning_fabric", "torchvision")


def imported_at_start(stages: tuple[str, ...], names: tuple[str, ...], validated: bool = False) -> list[str]:
    """Which of `names` are in sys.modules after importing the stages (and validating the default config)."""
    lines = [f"import defectcam.stages.{stage}" for stage in stages]
    if validated:
        lines += ["from hydra import compose, initialize_config_dir", "from defectcam.stages.settings import validate",
                  f"initialize_config_dir(config_dir={str(REPO / 'conf')!r}, version_base='1.3')",
                  "validate(compose(config_name='config'))"]
    probe = "; ".join([*lines, "import json, sys", f"print(json.dumps(sorted(name for name in {names!r} if name in sys.modules)))"])
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_stage_imports_the_deferred_libraries() -> None:
    assert imported_at_start(STAGES, DEFERRED) == []


def test_stages_that_do_not_train_start_and_validate_without_lightning_torchvision_or_drawing_libraries() -> None:
    others = tuple(stage for stage in STAGES if stage not in ("train", "reproduce"))
    assert imported_at_start(others, (*TRAINING_LIBRARIES, *DRAWING), validated=True) == []
