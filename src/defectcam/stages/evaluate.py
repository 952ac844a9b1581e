"""`defectcam-evaluate`: test-split classification metrics and timing of each problem's best checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig

from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.evaluation.classification import classification_metrics, logit_margin, predict, undefined_metrics_note
from defectcam.evaluation.latency import batched_predictions, per_image_latency_ms
from defectcam.io import atomic_path, read_json, write_json
from defectcam.models.loading import file_sha1
from defectcam.stages.common import autocast_for, best_checkpoint, inference_device, trained_problem
from defectcam.stages.data import prepare_data
from defectcam.stages.settings import output_dir, to_plain
from defectcam.stages.shell import stage_entry

log = logging.getLogger(__name__)


def evaluation_key(cfg: DictConfig, problem: int) -> dict[str, Any]:
    """What a problem's metrics.json depends on (it is reused only while this is unchanged)."""
    ckpt = best_checkpoint(cfg, problem)
    # Latency and throughput depend on where and how the model ran, not only on its weights.
    return {"checkpoint_sha1": file_sha1(ckpt) if ckpt.is_file() else None, "device": str(inference_device(cfg)),
            "precision": str(cfg.trainer.precision), "evaluate": to_plain(cfg.evaluate)}


def evaluate_problem(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """Metrics of one problem on its test part (the split training used); skipped when up to date."""
    out = problem_dir(output_dir(cfg), data.problem)
    metrics_path = out / "metrics.json"
    device = inference_device(cfg)
    key = evaluation_key(cfg, data.problem)
    if metrics_path.is_file() and not cfg.evaluate.force and read_json(metrics_path).get("key") == key:
        return read_json(metrics_path)
    module, datamodule = trained_problem(cfg, data, device)
    loader = datamodule.test_dataloader()

    def forward(images: torch.Tensor) -> torch.Tensor:
        with autocast_for(cfg, device):
            return module(images)

    logits: list[torch.Tensor] = []

    def recording_forward(images: torch.Tensor) -> torch.Tensor:
        # batched_predictions returns softmax probabilities only; the margins come from the same pass.
        out = forward(images)
        logits.append(out.detach())
        return out

    p_defect, throughput = batched_predictions(recording_forward, (batch["image"] for batch in loader), device)
    margin = logit_margin(torch.cat(logits).cpu())
    rows = datamodule.part_rows("test")
    labels = torch.as_tensor(data.table["label"].to_numpy()[rows])
    test_set = datamodule.dataset("test")
    timing_images = torch.stack([test_set[i]["image"] for i in range(min(len(rows), int(cfg.evaluate.latency_images)))])
    latency_mean, latency_std = per_image_latency_ms(forward, timing_images.to(device), int(cfg.evaluate.warmup))
    summary = read_json(out / "train_summary.json")
    metrics = {
        "problem": data.problem,
        "split": "test",
        **classification_metrics(margin, labels),  # AUC/AP from margins: p_defect saturates at 1.0 in float32
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
    write_predictions(out / "predictions.csv", data.table["image_id"].to_numpy()[rows], labels, p_defect, margin)
    write_json(metrics_path, metrics)
    log.info("problem %d: test accuracy %.4f, AUC-ROC %.4f, latency %.2f ms", data.problem, metrics["accuracy"], metrics["auc_roc"], latency_mean)
    return metrics


def prediction_table(image_ids: Sequence[str], labels: torch.Tensor, p_defect: torch.Tensor, margin: torch.Tensor) -> pd.DataFrame:
    """One row per test image: id, label, p_defect (softmax), logit_margin (the ranking score) and pred (argmax)."""
    return pd.DataFrame({
        "image_id": list(image_ids),
        "label": labels.numpy(),
        "p_defect": p_defect.numpy(),
        "logit_margin": margin.numpy(),
        "pred": predict(margin).numpy(),
    })


def write_predictions(path: Path, image_ids: Sequence[str], labels: torch.Tensor, p_defect: torch.Tensor, margin: torch.Tensor) -> None:
    """predictions.csv (see prediction_table), written atomically; margins at full float32 precision."""
    with atomic_path(path) as tmp:
        prediction_table(image_ids, labels, p_defect, margin).to_csv(tmp, index=False, float_format="%.9g")


def run_evaluate(cfg: DictConfig) -> None:
    """The evaluate stage over every problem (returns nothing: test metrics are never a sweep objective)."""
    for data in prepare_data(cfg).values():
        evaluate_problem(cfg, data)


main = stage_entry("evaluate", run_evaluate)
