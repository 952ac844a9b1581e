"""Several training seeds in one command: a Hydra multirun over `seed`, each in its own folder, then mean and std."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, tiny_overrides
from defectcam.models.loading import file_sha1
from defectcam.stages.seeds import aggregate_seeds


def fake_run(folder: Path, miou: float, auc: float) -> None:
    tables = folder / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame([{"problem": 1, "accuracy": 0.9, "balanced_accuracy": 0.8, "auc_roc": auc, "average_precision": 0.7,
                   "precision": 0.6, "recall": 0.5, "f1": 0.55}]).to_csv(tables / "classification.csv", index=False)
    rows = [{"problem": 1, "method": "layercam", "layer": layer, "gate": "none", "postprocess": "none", "miou": miou + i / 10,
             "all_miou": 0.5, "false_alarm": 0.1, "image_false_alarm": 0.2, "threshold": 0.3} for i, layer in enumerate(["layer1", "layer2"])]
    pd.DataFrame(rows).to_csv(tables / "localization.csv", index=False)


def test_aggregate_gives_mean_and_std_over_seed_folders(tmp_path: Path) -> None:
    for seed, (miou, auc) in enumerate([(0.2, 0.9), (0.4, 0.8), (0.6, 1.0)]):
        fake_run(tmp_path / f"seed_{seed}", miou, auc)
    (tmp_path / "seed_9").mkdir()  # unfinished: no tables, left out
    out = aggregate_seeds(tmp_path)
    assert out == tmp_path / "seeds"
    table = pd.read_csv(out / "localization_seeds.csv").set_index("layer")
    assert table.loc["layer1", "seeds"] == 3
    assert table.loc["layer1", "miou_mean"] == pytest.approx(0.4)
    assert table.loc["layer2", "miou_std"] == pytest.approx(np.std([0.3, 0.5, 0.7], ddof=1))
    assert table.loc["layer2", "miou_min"] == pytest.approx(0.3)
    classification = pd.read_csv(out / "classification_seeds.csv")
    assert classification["auc_roc_mean"].item() == pytest.approx(0.9) and classification["seeds"].item() == 3
    assert classification["auc_roc_min"].item() == pytest.approx(0.8)
    assert "accuracy_argmax_mean" not in classification  # tables from before the argmax columns: left out, no crash
    assert (out / "report.html").is_file() and (out / "localization_seeds.md").is_file()
    assert aggregate_seeds(tmp_path / "nothing") is None


def test_seed_multirun_trains_each_seed_in_its_own_folder(tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(tmp_path / "synthetic", tmp_path / "unused", "[1]") if not o.startswith("paths.output_dir")]
    result = run_cli("reproduce", "-m", *overrides, "seed=0,1", f"paths.output_dir={tmp_path}/seeds_run/seed_${{seed}}",
                     "localize.postprocess=[none]", "localize.bootstrap=50", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [tmp_path / "seeds_run" / f"seed_{k}" / "problem_1" for k in (0, 1)]
    assert (runs[0] / "split.csv").read_text() == (runs[1] / "split.csv").read_text()  # one split for every seed
    assert file_sha1(runs[0] / "checkpoints" / "best.ckpt") != file_sha1(runs[1] / "checkpoints" / "best.ckpt")
    table = pd.read_csv(tmp_path / "seeds_run" / "seeds" / "localization_seeds.csv")
    assert (table["seeds"] == 2).all() and table["miou_std"].notna().all()
