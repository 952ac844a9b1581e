"""The LightningModule that trains the full-resolution decoder over a frozen classifier.

Batches hold a training image's uint8 pixels, its label and its supervision: the starting CAM's seed
regions (supervision 'cams') or its ground-truth mask at the network's size (supervision 'masks', the
fully supervised reference). Every step draws a flip/quarter turn per image (image and regions turned
together) and, for 'cams', fresh seeds, from one generator seeded by the recipe. Every `eval_every`
steps (and at the last) the decoder is scored on validation by the caller's function; the best state
is kept (ties: the earlier step), so checkpoint selection reads validation masks only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import Tensor

from defectcam.cams.tta import TTA_SETS
from defectcam.fullres.losses import pairwise_potts_loss, partial_cross_entropy, size_penalty
from defectcam.fullres.network import FullResolutionNet
from defectcam.fullres.seeds import training_targets
from defectcam.models.decoder_recipe import SUPERVISIONS, DecoderRecipe, normalized


class DecoderTraining(pl.LightningModule):
    """Trains `network`'s decoder; `val_score(probs (N, S, S) on the CPU) -> float` picks the kept state."""

    def __init__(self, network: FullResolutionNet, recipe: DecoderRecipe, normalization: tuple[float, float],
                 val_images: Tensor, val_score: Callable[[Tensor], float], eval_batch_size: int = 16) -> None:
        super().__init__()
        if recipe.supervision not in SUPERVISIONS:
            raise ValueError(f"supervision must be one of {SUPERVISIONS}, got {recipe.supervision!r}")
        self.network, self.recipe, self.normalization = network, recipe, normalization
        self.val_images, self.val_score, self.eval_batch_size = val_images, val_score, eval_batch_size
        self.best_score, self.best_step = -math.inf, -1
        self.best_state: dict[str, Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self.generator = torch.Generator().manual_seed(recipe.seed)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        recipe = self.recipe
        gray = batch["image"].float() / 255.0
        regions = torch.stack([batch["foreground"], batch["background"]], 1).float()
        if recipe.augment:
            gray, regions = self._turn(gray, regions)
        if recipe.crop is not None and recipe.crop < gray.shape[-1]:
            gray, regions = self._crop(gray, regions, batch["label"].bool(), recipe.crop)
        mean, std = self.normalization
        images = ((gray - mean) / std).unsqueeze(1).expand(-1, 3, -1, -1)
        with torch.set_grad_enabled(self.network.encoder is not None):  # a frozen classifier needs no graph
            features = self.network.features(images)
        logits = self.network.decode(features).float()
        probs = logits.softmax(1)[:, 1]
        defective = batch["label"].bool()
        foreground, background = regions[:, 0] > 0.5, regions[:, 1] > 0.5
        if recipe.supervision == "cams":
            target = training_targets(defective, foreground, background, recipe.n_foreground, recipe.n_background,
                                      recipe.patch, self.generator, recipe.negatives)
        else:  # the reference: every pixel labelled by the true mask (held in the foreground slot)
            target = foreground.long()
        per_image = partial_cross_entropy(logits, target)
        labelled = (target >= 0).flatten(1).any(1)
        loss = per_image[labelled].mean() if bool(labelled.any()) else logits.sum() * 0.0
        terms = {"ce": loss.detach()}
        if recipe.pairwise_weight > 0:
            pairwise = pairwise_potts_loss(probs, gray, recipe.pairwise_radius, recipe.sigma_xy, recipe.sigma_intensity)
            loss = loss + recipe.pairwise_weight * pairwise
            terms["pairwise"] = pairwise.detach()
        if recipe.size_weight > 0 and bool(defective.any()):
            size = size_penalty(probs[defective], recipe.size_low, recipe.size_high).mean()
            loss = loss + recipe.size_weight * size
            terms["size"] = size.detach()
        self.log_dict({f"fullres/{name}": value for name, value in terms.items()}, on_step=True, batch_size=len(defective))
        return loss

    def _turn(self, gray: Tensor, regions: Tensor) -> tuple[Tensor, Tensor]:
        """One of the 8 flips/quarter turns per image, drawn from the recipe's generator; regions turn alongside."""
        transforms = TTA_SETS["dihedral"]
        picks = torch.randint(len(transforms), (gray.shape[0],), generator=self.generator).tolist()
        gray = torch.stack([transforms[k].apply(g) for k, g in zip(picks, gray)])
        regions = torch.stack([transforms[k].apply(r) for k, r in zip(picks, regions)])
        return gray, regions

    def _crop(self, gray: Tensor, regions: Tensor, defective: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """A size x size window per image, drawn from the recipe's generator: around a random pixel of the foreground
        region (the CAM's, or the mask's for the reference) on a defective image, anywhere on a defect-free one."""
        height, width = gray.shape[-2:]
        windows = []
        for i in range(gray.shape[0]):
            inside = torch.nonzero(regions[i, 0] > 0.5) if bool(defective[i]) else torch.zeros(0, 2, dtype=torch.long)
            if len(inside):
                centre = inside[int(torch.randint(len(inside), (1,), generator=self.generator))].tolist()
                jitter = torch.randint(-(size // 4), size // 4 + 1, (2,), generator=self.generator).tolist()
                top, left = centre[0] - size // 2 + jitter[0], centre[1] - size // 2 + jitter[1]
            else:
                top = int(torch.randint(height - size + 1, (1,), generator=self.generator))
                left = int(torch.randint(width - size + 1, (1,), generator=self.generator))
            windows.append((min(max(top, 0), height - size), min(max(left, 0), width - size)))
        gray = torch.stack([g[..., t : t + size, x : x + size] for g, (t, x) in zip(gray, windows)])
        regions = torch.stack([r[..., t : t + size, x : x + size] for r, (t, x) in zip(regions, windows)])
        return gray, regions

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        if step % self.recipe.eval_every == 0 or step >= self.recipe.steps:
            self._validate(step)

    def _validate(self, step: int) -> None:
        was_training = self.network.training
        self.network.eval()
        probs = []
        with torch.no_grad():
            for start in range(0, self.val_images.shape[0], self.eval_batch_size):
                batch = normalized(self.val_images[start : start + self.eval_batch_size], *self.normalization).to(self.device)
                probs.append(self.network.decoder_logits(batch).float().softmax(1)[:, 1].cpu())
        self.network.train(was_training)
        score = float(self.val_score(torch.cat(probs)))
        self.history.append({"step": step, "val_score": score})
        if self.logger is not None:  # at the step it scores: self.log would file it at Lightning's next logging step
            self.logger.log_metrics({"fullres/val_score": score}, step=step)
        if score > self.best_score:  # ties keep the earlier state
            self.best_score, self.best_step = score, step
            self.best_state = {k: v.cpu() for k, v in self.network.decoder_state().items()}

    def configure_optimizers(self) -> Any:
        encoder = [p for name, p in self.network.named_parameters() if name.startswith("encoder.")]
        rest = [p for name, p in self.network.named_parameters() if p.requires_grad and not name.startswith("encoder.")]
        groups = [{"params": rest, "lr": self.recipe.lr}] + ([{"params": encoder, "lr": self.recipe.encoder_lr}] if encoder else [])
        optimizer = torch.optim.AdamW(groups, weight_decay=self.recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=self.recipe.steps,
                                                        pct_start=0.1, anneal_strategy="cos")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class DecoderProgressBar(TQDMProgressBar):
    """Lightning's bar, labelled with the decoder it trains. Its defaults said "Epoch 0" (the sampler draws all the
    steps as one epoch) and showed the logger's version, the decoder's name cut to its last 4 characters, as v_num."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"decoder {self.name}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
