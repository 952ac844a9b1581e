"""`defectcam-evaluate`: test-split classification metrics and timing of each problem's best checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from omegaconf import DictConfig

from defectcam.data.prepare import ProblemData, problem_dir
from defectcam.evaluation.classification import classification_metrics, logit_margin, predict, undefined_metrics_note
from defectcam.evaluation.decision import DECISION_VERSION, decision_rule, decision_threshold
from defectcam.evaluation.latency import batched_predictions, per_image_latency_ms
from defectcam.errors import StaleInputError
from defectcam.io import atomic_path, finite_or_null, read_json, write_json
from defectcam.models.loading import file_sha1
from defectcam.stages.common import autocast_for, best_checkpoint, inference_device, require_all_trained, trained_problem
from defectcam.stages.data import prepare_data
from defectcam.stages.settings import output_dir, to_plain
from defectcam.stages.shell import stage_entry

if TYPE_CHECKING:
    from defectcam.data.datamodule import DefectDataModule

log = logging.getLogger(__name__)
ARGMAX_SCORES = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "tn", "fp", "fn", "tp")


def evaluation_key(cfg: DictConfig, problem: int) -> dict[str, Any]:
    """What a problem's metrics.json depends on (it is reused only while this is unchanged)."""
    ckpt = best_checkpoint(cfg, problem)
    # Latency and throughput depend on where and how the model ran, not only on its weights.
    return {"checkpoint_sha1": file_sha1(ckpt) if ckpt.is_file() else None, "device": str(inference_device(cfg)),
            "precision": str(cfg.trainer.precision), "evaluate": to_plain(cfg.evaluate), "decision_version": DECISION_VERSION}


def evaluate_problem(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """Metrics of one problem on its test part (the split training used); skipped when up to date."""
    out = problem_dir(output_dir(cfg), data.problem)
    metrics_path = out / "metrics.json"
    device = inference_device(cfg)
    key = evaluation_key(cfg, data.problem)
    if metrics_path.is_file() and not cfg.evaluate.force and read_json(metrics_path).get("key") == key:
        return read_json(metrics_path)
    module, datamodule = trained_problem(cfg, data, device)

    def forward(images: torch.Tensor) -> torch.Tensor:
        with autocast_for(cfg, device):
            return module(images)

    p_defect, margin, throughput = part_predictions(forward, datamodule.test_dataloader(), device)
    threshold = chosen_threshold(cfg, data, forward, datamodule, device)
    rows = datamodule.part_rows("test")
    labels = torch.as_tensor(data.table["label"].to_numpy()[rows])
    test_set = datamodule.dataset("test")
    timing_images = torch.stack([test_set[i]["image"] for i in range(min(len(rows), int(cfg.evaluate.latency_images)))])
    latency_mean, latency_std = per_image_latency_ms(forward, timing_images.to(device), int(cfg.evaluate.warmup))
    summary = read_json(out / "train_summary.json")
    metrics = {
        "problem": data.problem,
        "split": "test",
        "decision": str(cfg.evaluate.decision),
        "decision_threshold": threshold,
        **classification_metrics(margin, labels, threshold),  # AUC/AP from margins: p_defect saturates at 1.0 in float32
        **argmax_columns(margin, labels),
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
    write_predictions(out / "predictions.csv", data.table["image_id"].to_numpy()[rows], labels, p_defect, margin, threshold)
    # AUC-ROC and AP are NaN when the test part lacks a class: null in strict JSON. Not the key: it is compared as
    # recorded.
    record = {**finite_or_null({k: v for k, v in metrics.items() if k != "key"}), "key": key}
    write_json(metrics_path, record)
    log.info("problem %d: test accuracy %.4f (decision margin > %.4g; argmax %.4f), AUC-ROC %.4f, latency %.2f ms",
             data.problem, metrics["accuracy"], threshold, metrics["accuracy_argmax"], metrics["auc_roc"], latency_mean)
    return record  # as a later run reads it back


def stale_metrics(cfg: DictConfig, problem: int) -> tuple[str, str] | None:
    """(metrics.json, what is wrong and the command that refreshes it) when it is missing or stale, else None."""
    path = problem_dir(output_dir(cfg), problem) / "metrics.json"
    if not path.is_file():
        return str(path), "missing; run `defectcam-evaluate` (make evaluate)"
    if read_json(path).get("key") != evaluation_key(cfg, problem):
        return str(path), "made from another best.ckpt or other evaluate settings; run `defectcam-evaluate` (make evaluate)"
    return None


def fresh_metrics(cfg: DictConfig, data: ProblemData) -> dict[str, Any]:
    """metrics.json of the current best.ckpt and settings: recomputed when stale (on_stale=recompute), or one line
    naming it (on_stale=error)."""
    stale = stale_metrics(cfg, data.problem) if cfg.on_stale == "error" else None
    if stale:
        raise StaleInputError(f"{stale[0]}: {stale[1]}, or pass on_stale=recompute")
    return evaluate_problem(cfg, data)


def part_predictions(forward: Callable[[torch.Tensor], torch.Tensor], loader: Iterable[dict[str, Any]],
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Defect probabilities (N,), logit margins (N,) and throughput (images/s) of one part's batches."""
    logits: list[torch.Tensor] = []

    def recording_forward(images: torch.Tensor) -> torch.Tensor:
        # batched_predictions returns softmax probabilities only; the margins come from the same pass.
        out = forward(images)
        logits.append(out.detach())
        return out

    p_defect, throughput = batched_predictions(recording_forward, (batch["image"] for batch in loader), device)
    return p_defect, logit_margin(torch.cat(logits).cpu()), throughput


def chosen_threshold(cfg: DictConfig, data: ProblemData, forward: Callable[[torch.Tensor], torch.Tensor],
                     datamodule: DefectDataModule, device: torch.device) -> float:
    """The decision threshold on the logit margin that evaluate.decision names: 0 (argmax) or chosen on validation."""
    if decision_rule(cfg.evaluate.decision) == "argmax":
        return 0.0
    _, margin, _ = part_predictions(forward, datamodule.loader("val"), device)
    labels = torch.as_tensor(data.table["label"].to_numpy()[datamodule.part_rows("val")])
    if labels.min() == labels.max():
        log.warning("problem %d: the validation part has one class only: the decision stays the argmax (margin > 0)", data.problem)
    return decision_threshold(margin, labels)


def argmax_columns(margin: torch.Tensor, labels: torch.Tensor) -> dict[str, float | int]:
    """The argmax decision's (margin > 0) scores, suffixed _argmax: the reference study's protocol."""
    scores = classification_metrics(margin, labels, 0.0)
    return {f"{name}_argmax": scores[name] for name in ARGMAX_SCORES}


def prediction_table(image_ids: Sequence[str], labels: torch.Tensor, p_defect: torch.Tensor, margin: torch.Tensor,
                     threshold: float = 0.0) -> pd.DataFrame:
    """One row per test image: id, label, p_defect (softmax), logit_margin (the ranking score), pred (the decision
    margin > threshold) and pred_argmax (margin > 0)."""
    return pd.DataFrame({
        "image_id": list(image_ids),
        "label": labels.numpy(),
        "p_defect": p_defect.numpy(),
        "logit_margin": margin.numpy(),
        "pred": predict(margin, threshold).numpy(),
        "pred_argmax": predict(margin).numpy(),
    })


def write_predictions(path: Path, image_ids: Sequence[str], labels: torch.Tensor, p_defect: torch.Tensor, margin: torch.Tensor,
                      threshold: float = 0.0) -> None:
    """predictions.csv (see prediction_table), written atomically; margins at full float32 precision."""
    with atomic_path(path) as tmp:
        prediction_table(image_ids, labels, p_defect, margin, threshold).to_csv(tmp, index=False, float_format="%.9g")


def run_evaluate(cfg: DictConfig) -> None:
    """The evaluate stage over every problem (returns nothing: test metrics are never a sweep objective)."""
    require_all_trained(cfg)
    for data in prepare_data(cfg).values():
        evaluate_problem(cfg, data)


main = stage_entry("evaluate", run_evaluate)
