"""`defectcam-evaluate`: test-split classification metrics and timing of each problem's best checkpoint."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig

from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.evaluation.classification import classification_metrics, predict, undefined_metrics_note
from defectcam.evaluation.latency import batched_predictions, per_image_latency_ms
from defectcam.io import atomic_path, read_json, write_json
from defectcam.models.loading import file_sha1
from defectcam.stages.common import autocast_for, best_checkpoint, inference_device, trained_problem
from defectcam.stages.data import prepare_data
from defectcam.stages.settings import output_dir, to_plain
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)


def evaluate_problem(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """Metrics of one problem on its test part (the split training used); skipped when up to date."""
    out = problem_dir(output_dir(cfg), data.problem)
    metrics_path, ckpt = out / "metrics.json", best_checkpoint(cfg, data.problem)
    device = inference_device(cfg)
    # Latency and throughput depend on where and how the model ran, not only on its weights.
    key = {"checkpoint_sha1": file_sha1(ckpt) if ckpt.is_file() else None, "device": str(device),
           "precision": str(cfg.trainer.precision), "evaluate": to_plain(cfg.evaluate)}
    if metrics_path.is_file() and not cfg.evaluate.force and read_json(metrics_path).get("key") == key:
        return read_json(metrics_path)
    module, datamodule = trained_problem(cfg, data, device)
    loader = datamodule.test_dataloader()

    def forward(images: torch.Tensor) -> torch.Tensor:
        with autocast_for(cfg, device):
            return module(images)

    p_defect, throughput = batched_predictions(forward, (batch["image"] for batch in loader), device)
    rows = datamodule.part_rows("test")
    labels = torch.as_tensor(data.table["label"].to_numpy()[rows])
    test_set = datamodule.dataset("test")
    timing_images = torch.stack([test_set[i]["image"] for i in range(min(len(rows), int(cfg.evaluate.latency_images)))])
    latency_mean, latency_std = per_image_latency_ms(forward, timing_images.to(device), int(cfg.evaluate.warmup))
    summary = read_json(out / "train_summary.json")
    metrics = {
        "problem": data.problem,
        "split": "test",
        **classification_metrics(p_defect, labels),
        "best_val_accuracy": summary["best_val_accuracy"],
        "train_time_s": summary["train_time_s"],
        "latency_ms_mean": latency_mean,
        "latency_ms_std": latency_std,
        "throughput_img_s": throughput,
        "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "key": key,
    }
    note = undefined_metrics_note(labels)
    if note:
        metrics["note"] = note
        log.warning("problem %d, test split: %s", data.problem, note)
    predictions = pd.DataFrame(
        {"image_id": data.table["image_id"].to_numpy()[rows], "label": labels.numpy(), "p_defect": p_defect.numpy(), "pred": predict(p_defect).numpy()}
    )
    with atomic_path(out / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    write_json(metrics_path, metrics)
    log.info("problem %d: test accuracy %.4f, AUC-ROC %.4f, latency %.2f ms", data.problem, metrics["accuracy"], metrics["auc_roc"], latency_mean)
    return metrics


def run_evaluate(cfg: DictConfig) -> None:
    """The evaluate stage over every problem (returns nothing: test metrics are never a sweep objective)."""
    for data in prepare_data(cfg).values():
        evaluate_problem(cfg, data)


main = stage_entry("evaluate", run_evaluate)
