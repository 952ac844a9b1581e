"""scripts/real_results.py: the README's real-data table quotes a training time only for runs timed alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "real_results.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_results", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_seed_run(parent: Path, seed: int, train_time_s: float) -> Path:
    """The files the classification table reads, of one finished seed run."""
    folder = parent / f"seed_{seed}"
    (folder / "tables").mkdir(parents=True)
    for table in ("localization.csv", "classification.csv"):
        (folder / "tables" / table).write_text("x\n1\n")
    (folder / "problem_1").mkdir()
    metrics = {"accuracy": 1.0, "balanced_accuracy": 1.0, "auc_roc": 1.0, "tn": 9, "fp": 0, "fn": 0, "tp": 3,
               "decision_threshold": 0.5}
    (folder / "problem_1" / "metrics.json").write_text(json.dumps(metrics))
    (folder / "problem_1" / "train_summary.json").write_text(json.dumps({"epochs": 8, "best_epoch": 6,
                                                                         "train_time_s": train_time_s}))
    return folder


def test_untimed_seeds_show_no_training_time(tmp_path: Path) -> None:
    script = load_script()
    folders = {0: fake_seed_run(tmp_path, 0, 4496.0), 2: fake_seed_run(tmp_path, 2, 1007.4)}
    lines, _ = script.classification(folders, frozenset({0}))
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| seed")}
    assert "4496" not in row["seed 0"] and "not timed alone (7 of 8)" in row["seed 0"]
    assert row["seed 2"].rstrip().endswith("| 1007 s wall, no ref_speed (7 of 8) |")
    assert script.seed_list("0, 1") == frozenset({0, 1})


def test_a_timed_seed_with_its_ref_speed_readings_shows_bare_image_equivalents(tmp_path: Path) -> None:
    script = load_script()
    folders = {1: fake_seed_run(tmp_path, 1, 1026.7), 2: fake_seed_run(tmp_path, 2, 965.9)}
    speeds = script.speed_pairs("1=15.18/14.10, 2=15.27/15.65")
    assert speeds == {1: (15.18, 14.10), 2: (15.27, 15.65)}
    lines, _ = script.classification(folders, frozenset(), speeds)
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| seed")}
    assert row["seed 1"].rstrip().endswith("| 1027 s = 15,030 eq. (7 of 8) |")  # 1026.7 x 14.64 = 15,031
    assert row["seed 2"].rstrip().endswith("| 966 s = 14,930 eq. (7 of 8) |")  # 965.9 x 15.46 = 14,933


def test_ref_speed_for_an_untimed_or_missing_seed_or_unreadable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    fake_seed_run(tmp_path, 0, 10.0)
    both = run_script(SCRIPT, str(tmp_path), "--untimed", "0", "--ref-speed", "0=15/15", timeout=120)
    assert both.returncode == 2 and both.stderr.strip() == (
        "real_results: error: --ref-speed and --untimed both name seed(s) [0]: a run not timed alone has no training time to convert")
    missing = run_script(SCRIPT, str(tmp_path), "--ref-speed", "3=15/15", timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"real_results: error: --ref-speed names seed(s) [3] that {tmp_path} has no finished run of"
    unreadable = run_script(SCRIPT, str(tmp_path), "--ref-speed", "0=15", timeout=120)
    assert unreadable.returncode == 2 and "Traceback" not in unreadable.stderr  # argparse: its usage, then the error line
    assert unreadable.stderr.strip().splitlines()[-1] == "real_results.py: error: argument --ref-speed: invalid speed_pairs value: '0=15'"


def test_untimed_seed_without_a_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    fake_seed_run(tmp_path, 0, 10.0)
    result = run_script(SCRIPT, str(tmp_path), "--untimed", "0,5", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"real_results: error: --untimed names seed(s) [5] that {tmp_path} has no finished run of"
