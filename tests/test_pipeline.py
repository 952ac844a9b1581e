"""End to end on a tiny configuration: every file of the contract, the tables' columns, idempotence, sweeps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, private_copy, run_cli, run_script

CLASSIFICATION = ["problem", "accuracy", "auc_roc", "precision", "recall", "f1", "tn", "fp", "fn", "tp",
                  "best_val_accuracy", "train_time_s", "latency_ms_mean", "latency_ms_std"]
LOCALIZATION = ["problem", "method", "layer", "split", "threshold", "miou", "all_miou", "false_alarm", "image_false_alarm",
                "gate", "postprocess", "miou_ci_low", "miou_ci_high", "all_miou_ci_low", "all_miou_ci_high"]
PER_PROBLEM = ["split.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "train_summary.json", "metrics.json",
               "fullres/fullres.pt", "fullres/fullres_meta.json", "fullres/decoder_fullres.pt", "figures/fullres.png",
               "predictions.csv", "cams/cams.pt", "localization.csv", "curves.csv", "localization_images.csv", "figures/cams_layercam.png",
               "figures/threshold_curves.png"]


def test_every_contract_file_exists(pipeline) -> None:
    out: Path = pipeline["out"]
    for problem in (1, 2):
        for name in PER_PROBLEM:
            assert (out / f"problem_{problem}" / name).is_file(), name
        assert list((out / f"problem_{problem}" / "tensorboard").glob("events.out.tfevents.*"))
    for table in ("classification", "localization", "localization_summary"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{table}.{ext}").is_file()
    html = (out / "report.html").read_text()
    assert "data:image/" in html and "SegNet" in html
    assert 'href="problem_1/figures/threshold_curves.png"' in html  # each inlined figure links its PNG
    assert html.index("The answer") < html.index("Method x layer") < html.index("Classification")  # leads with the answer
    assert "chosen on validation by miou" in html


def test_classification_table(pipeline) -> None:
    table = pd.read_csv(pipeline["out"] / "tables" / "classification.csv")
    assert set(CLASSIFICATION) <= set(table.columns)
    assert table["problem"].tolist() == [1, 2]
    for column in ("accuracy", "precision", "recall", "f1", "best_val_accuracy"):
        assert table[column].between(0, 1).all()
    assert (table[["tn", "fp", "fn", "tp"]].sum(axis=1) == table["n"]).all()
    metrics = json.loads((pipeline["out"] / "problem_1" / "metrics.json").read_text())
    split = pd.read_csv(pipeline["out"] / "problem_1" / "split.csv")
    predictions = pd.read_csv(pipeline["out"] / "problem_1" / "predictions.csv")
    assert predictions["image_id"].tolist() == split.loc[split["part"] == "test", "image_id"].tolist()
    assert metrics["n"] == len(predictions) and metrics["split"] == "test"


def test_the_decision_is_chosen_on_validation_and_the_argmax_kept(pipeline) -> None:
    from defectcam.evaluation.decision import decision_threshold
    from defectcam.stages.cams import load_cam_cache

    for problem in (1, 2):
        folder = pipeline["out"] / f"problem_{problem}"
        metrics = json.loads((folder / "metrics.json").read_text())
        predictions = pd.read_csv(folder / "predictions.csv")
        split = pd.read_csv(folder / "split.csv")
        cache = load_cam_cache(folder)
        val_labels = torch.as_tensor(split["label"].to_numpy()[cache["val"]["rows"].numpy()])
        # evaluate chooses on its own validation pass; the CAM cache's margins (another pass) agree on CPU, and
        # localize's gate uses evaluate's threshold itself.
        assert metrics["decision"] == "validation"
        assert metrics["decision_threshold"] == pytest.approx(decision_threshold(cache["val"]["logit_margin"], val_labels), abs=1e-4)
        assert json.loads((folder / "localization_meta.json").read_text())["decision_threshold"] == metrics["decision_threshold"]
        assert (predictions["pred"] == (predictions["logit_margin"] > metrics["decision_threshold"])).all()
        assert (predictions["pred_argmax"] == (predictions["logit_margin"] > 0)).all()
        assert metrics["accuracy"] == pytest.approx((predictions["pred"] == predictions["label"]).mean())
        assert metrics["accuracy_argmax"] == pytest.approx((predictions["pred_argmax"] == predictions["label"]).mean())


def test_localization_table(pipeline) -> None:
    table = pd.read_csv(pipeline["out"] / "tables" / "localization.csv")
    assert set(LOCALIZATION + ["pixel_auroc", "pxap", "selection", "select_on"]) <= set(table.columns)
    assert (table["split"] == "test").all() and (table["selection"] == "val-best").all() and (table["select_on"] == "miou").all()
    assert not table.duplicated(["problem", "method", "layer", "gate", "postprocess"]).any()
    methods = set(table["method"])
    assert {"gradcam", "gradcampp", "layercam", "layercam_fused", "multiplicative", "multiplicative_geometric",
            "fullres", "full_image", "centred_ellipse", "random"} <= methods
    assert set(table.loc[table["method"] == "layercam", "layer"]) == {"layer1", "layer2", "layer3", "layer4"}
    assert set(table["gate"]) == {"none", "classifier"} and set(table["postprocess"]) == {"none", "ellipse"}
    for score in ("miou", "all_miou", "false_alarm", "image_false_alarm", "miou_ci_low", "miou_ci_high"):
        assert table[score].between(0, 1).all(), score
    assert (table["miou_ci_low"] <= table["miou"]).all() and (table["miou"] <= table["miou_ci_high"]).all()
    # per problem: 3 methods x 4 layers, 3 fusion maps, the full-resolution decoder, 3 baselines; x 2 gates x 2 post-processes
    assert len(table) == 2 * (3 * 4 + 3 + 1 + 3) * 2 * 2
    markdown = (pipeline["out"] / "tables" / "localization.md").read_text()
    assert "[" in markdown and "chosen on validation by miou" in markdown  # intervals, and the selection score named
    summary = pd.read_csv(pipeline["out"] / "tables" / "localization_summary.csv")
    assert set(summary["chosen_by"]) == {"miou", "all_miou"} and set(summary["gate"]) == {"none", "classifier"}
    assert (summary["layer"] != "-").all()  # entries are CAMs and decoders; the best baseline stands beside them


def test_classifier_gate_follows_the_classifier_decisions(pipeline) -> None:
    """Under gate=classifier, an image the classifier calls defect-free predicts nothing (the evaluate stage's decisions)."""
    for problem in (1, 2):
        folder = pipeline["out"] / f"problem_{problem}"
        decisions = pd.read_csv(folder / "predictions.csv").set_index("image_id")
        images = pd.read_csv(folder / "localization_images.csv")
        for gate, group in images.groupby("gate"):
            rejected = group[decisions.loc[group["image_id"], "pred"].to_numpy() == 0]
            if gate == "classifier":
                assert (rejected["iou"] == 0).all()
                assert (rejected["all_iou"] == (~rejected["defective"]).astype(float)).all()
        gated = images[images["gate"] == "classifier"].set_index(["method", "layer", "postprocess", "image_id"])["iou"]
        ungated = images[images["gate"] == "none"].set_index(["method", "layer", "postprocess", "image_id"])["iou"]
        kept = decisions.loc[gated.index.get_level_values("image_id"), "pred"].to_numpy() == 1
        # kept images score alike (the thresholds may differ per gate: compare only where they agree)
        table = pd.read_csv(folder / "localization.csv").query("split == 'test' and selection == 'val-best'")
        same = table.pivot_table(index=["method", "layer", "postprocess"], columns="gate", values="threshold")
        same = same[same["none"] == same["classifier"]].index
        mask = gated.index.droplevel("image_id").isin(same) & kept
        assert (gated[mask].to_numpy() == ungated.loc[gated.index[mask]].to_numpy()).all()


def test_check_quick_reads_the_tables_of_a_run(pipeline) -> None:
    # The tiny run (1 epoch, 32 px) need not pass the criteria; the script must judge it, one line per problem.
    check = run_script(REPO / "scripts" / "check_quick.py", str(pipeline["out"]), timeout=120)
    assert check.returncode in (0, 1), check.stderr[-2000:]
    lines = check.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["problem 1", "problem 2"]
    assert all(line.endswith(("ok", "FAIL")) and "LayerCAM layer" in line and "balanced accuracy" in line for line in lines)


def test_check_thresholds_finds_the_brute_force_optimum(pipeline) -> None:
    check = run_script(REPO / "scripts" / "check_thresholds.py", str(pipeline["out"]), "--layers", "layer1", timeout=120)
    assert check.returncode == 0, check.stderr[-2000:]
    gap = float(re.search(r"gap (\S+)", check.stdout).group(1))
    assert abs(gap) < 1e-9  # exact choice == best over every distinct validation value


def test_localize_leaves_torch_threads_as_it_found_them(pipeline, compose_cfg, monkeypatch) -> None:
    # A multirun (make seeds, make sweep) runs its jobs in one process: localize's one thread must not
    # leak into the next job's training (it once halved the speed of every seed after the first).
    # Nor may a stale decoder or CAM cache be recomputed inside that one thread.
    from defectcam.stages import localize

    seen = []
    refresh = localize.fresh_fullres
    monkeypatch.setattr(localize, "fresh_fullres", lambda cfg, data: seen.append(torch.get_num_threads()) or refresh(cfg, data))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        localize.run_localize(compose_cfg(*pipeline["overrides"], "localize.threads=1"))  # finished: reads, does not recompute
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and seen[0] == 2  # the first refresh (the one that would retrain) ran before localize's one thread


def test_cam_cache_holds_raw_maps_per_layer(pipeline) -> None:
    cache = torch.load(pipeline["out"] / "problem_1" / "cams" / "cams.pt", weights_only=True)
    assert {"val", "test", "meta"} <= set(cache)
    maps = cache["test"]["maps"]["layercam"]
    codes = maps["layer1"]["codes"]  # float16 codes of each map's own range (cams/storage.py)
    assert codes.dtype == torch.float16 and codes.shape[1:] == (8, 8)  # 32 px input / 4
    assert maps["layer4"]["codes"].shape[1:] == (1, 1) and (maps["layer1"]["low"] >= 0).all()
    assert len(cache["test"]["rows"]) == codes.shape[0] == maps["layer1"]["span"].shape[0]


def test_second_run_skips_every_stage(pipeline, tmp_path: Path) -> None:
    out, overrides = private_copy(pipeline, tmp_path)  # the rerun writes its tables and report where others read
    watched = [out / "problem_1" / n for n in ("checkpoints/best.ckpt", "metrics.json", "cams/cams.pt", "localization.csv")]
    stamps = [p.stat().st_mtime_ns for p in watched]
    result = run_cli("reproduce", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in watched] == stamps
    seconds = json.loads(re.search(r"done in [\d.]+ s: (\{.*\})", result.stdout + result.stderr).group(1).replace("'", '"'))
    assert seconds["train"] < 2 and seconds["cams"] < 3


def test_threshold_multirun_gathers_sweep_csv(pipeline, tmp_path: Path) -> None:
    out, overrides = private_copy(pipeline, tmp_path)
    result = run_cli("localize", "-m", *overrides, "localize.threshold=0.2,0.4")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = pd.read_csv(out / "sweep" / "sweep.csv")
    assert (sweep.groupby(["problem", "method", "layer", "gate", "postprocess"]).size() == 2).all()
    assert sorted(sweep["threshold"].unique()) == [0.2, 0.4]
    assert {"val_miou", "test_miou", "val_all_miou", "test_image_false_alarm"} <= set(sweep.columns)
    assert (out / "sweep" / "sweep.png").is_file()
    # A sweep never overwrites the protocol's results.
    assert (out / "problem_1" / "localization.csv").read_bytes() == (pipeline["out"] / "problem_1" / "localization.csv").read_bytes()


def test_changed_training_setting_is_refused_not_mixed(pipeline) -> None:
    result = run_cli("train", *pipeline["overrides"], "trainer.max_epochs=2")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "trainer.max_epochs=1" in lines[0] and "train.force=true" in lines[0]


def test_localize_multirun_without_threshold_is_refused(pipeline) -> None:
    result = run_cli("localize", "-m", *pipeline["overrides"], "localize.layers=[layer1],[layer2]")
    assert result.returncode == 2 and "sweeps localize.threshold" in result.stderr


def test_foreign_or_mismatched_checkpoint_is_a_clear_error(pipeline, tmp_path: Path) -> None:
    from defectcam.errors import ModelError
    from defectcam.models.loading import load_classifier

    checkpoint = torch.load(pipeline["out"] / "problem_1" / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["state_dict"] = {k.replace("layer1", "layerX"): v for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, tmp_path / "renamed.ckpt")
    with pytest.raises(ModelError, match="weights do not fit resnet50"):
        load_classifier(tmp_path / "renamed.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ModelError, match="not a defectcam checkpoint"):
        load_classifier(tmp_path / "foreign.ckpt")


def test_whole_pipeline_on_a_real_layout_dagm_tree(dagm_root: Path, tmp_path: Path) -> None:
    """defectcam-reproduce experiment=quick data=dagm data.root=<tree> ... runs through (loader workers included)."""
    out = tmp_path / "out"
    result = run_cli("reproduce", "experiment=quick", "data=dagm", f"data.root={dagm_root}", "data.problems=[1]",
                     "data.image_size=32", "data.num_workers=2", "trainer.max_epochs=1", "train.progress_bar=false",
                     f"paths.output_dir={out}", "evaluate.latency_images=2", "localize.n_thresholds=11",
                     "fullres.steps=4", "fullres.eval_every=2", "fullres.figure_images=1")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "tables" / "localization.csv")
    assert table["problem"].unique().tolist() == [1] and (out / "report.html").is_file()


def test_undefined_scores_are_null_in_metrics_json(pipeline, compose_cfg, tmp_path: Path, monkeypatch) -> None:
    # A test part without one class makes AUC-ROC NaN; json.dumps would write the bare token NaN, which strict
    # readers (jq, browsers) reject.
    from defectcam.stages import evaluate

    out, overrides = private_copy(pipeline, tmp_path)
    scores = evaluate.classification_metrics
    monkeypatch.setattr(evaluate, "classification_metrics", lambda *a, **k: {**scores(*a, **k), "auc_roc": float("nan")})
    cfg = compose_cfg(*overrides, "evaluate.force=true")
    evaluate.run_evaluate(cfg)

    def refuse(token: str) -> None:
        raise AssertionError(f"metrics.json holds {token}")

    metrics = json.loads((out / "problem_1" / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["auc_roc"] is None and 0 <= metrics["accuracy"] <= 1
    assert metrics["key"] == evaluate.evaluation_key(cfg, 1)  # the key as given: a later run reuses the file


@pytest.mark.parametrize("stage", ["localize", "report"])
def test_a_stage_after_training_refuses_the_settings_of_another_classifier(pipeline, tmp_path: Path, stage: str) -> None:
    # Pointed at a folder with another seed (a seed_<k> folder of `make seeds`, k forgotten), the report's refresh
    # once retrained the decoder with that seed over the folder's classifier and rescored everything.
    out, overrides = private_copy(pipeline, tmp_path)
    folder = out / "problem_1"
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    result = run_cli(stage, *overrides, "seed=7")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "train_summary.json: problem 1 was trained with seed=0, this run asks 7; pass seed=0" in lines[0]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == stamps
