"""`defectcam-fullres`: per problem, a decoder over the frozen classifier that maps an image to defect
probabilities at the network's input resolution, trained from image labels and a starting CAM (method
`fullres`) or, as a fully supervised reference, from the train part's masks (method `supervised`).

Training reads the train part only (images, labels, and for `masks` its masks); validation masks only
decide which checkpoint is kept and, with several starting CAMs, which one. The maps of the val and test
parts go to fullres/fullres.pt (float16, at the input resolution), keyed like the CAM cache by the
classifier's SHA-1 and every setting; localize scores them as probabilities (no min-max).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, WeightedRandomSampler

from defectcam.cams.tta import tta_cams
from defectcam.data.prepare import ProblemData, ids_hash, problem_dir
from defectcam.errors import ConfigError, StageOrderError, StaleInputError
from defectcam.fullres import DECODER_METHODS, DECODER_SELECT_ON, MASKS_LAYER, METHOD_SUPERVISIONS
from defectcam.fullres.maps import batched_maps, probability_scoring_maps, stored_probabilities
from defectcam.fullres.network import FullResolutionNet
from defectcam.fullres.seeds import seed_regions
from defectcam.io import atomic_path, read_json, write_json
from defectcam.localization.entries import entry_scoring_maps, entry_sources, fusions_from, masks_tensor
from defectcam.localization.exact import score_at_best_threshold, sort_pixels
from defectcam.models.decoder_recipe import DecoderRecipe, DecoderTrainSet, normalized
from defectcam.models.loading import file_sha1
from defectcam.stages.cams import fresh_cams, load_cam_cache, refuse_or_warn, stale_reason, target_class
from defectcam.stages.common import best_checkpoint, inference_device, require_all_trained, trained_problem
from defectcam.stages.data import prepare_data
from defectcam.stages.settings import fullres_starts, fullres_supervisions, output_dir, to_plain
from defectcam.stages.shell import stage_entry

if TYPE_CHECKING:
    from defectcam.models.decoder_module import DecoderTraining

log = logging.getLogger(__name__)
FULLRES_FORMAT = 1
FOLDER, CACHE_NAME, META_NAME, SELECTION_NAME = "fullres", "fullres.pt", "fullres_meta.json", "selection.csv"
# Settings added after decoders were first cached, at the value every earlier cache and decoder record implies: the
# meta leaves a setting out at that value (so those caches stay fresh) and a record without it is read as that value.
SETTINGS_ADDED_LATER: dict[str, Any] = {"deepest_layer": "layer4"}
INFERENCE_SETTINGS = ("tta", "eval_batch_size")  # change the maps, not the trained decoders
# fullres settings a method's training never reads: the weak decoder ignores the reference's encoder options,
# and the reference (true masks) draws no seeds and has no starting CAM or negative-image rule of its own.
UNREAD_SETTINGS = {"fullres": ("supervised_encoder",), "supervised": ("start", "seeds", "negatives")}
UNREAD_META = {"fullres": (), "supervised": ("starts", "cam")}


def recipe_of(cfg: DictConfig, supervision: str) -> DecoderRecipe:
    """The decoder's training recipe from cfg.fullres for one supervision."""
    options = cfg.fullres
    return DecoderRecipe(
        supervision=supervision, steps=int(options.steps), batch_size=int(options.batch_size), lr=float(options.lr),
        weight_decay=float(options.weight_decay), eval_every=int(options.eval_every),
        n_foreground=int(options.seeds.foreground), n_background=int(options.seeds.background),
        patch=int(options.seeds.patch), negatives=bool(options.negatives), pairwise_weight=float(options.pairwise.weight),
        pairwise_radius=int(options.pairwise.radius), sigma_xy=float(options.pairwise.sigma_xy),
        sigma_intensity=float(options.pairwise.sigma_intensity), size_weight=float(options.size.weight),
        size_low=float(options.size.low), size_high=float(options.size.high), augment=bool(options.augment),
        crop=None if options.crop is None else int(options.crop), seed=int(cfg.seed),
        train_encoder=supervision == "masks" and bool(options.supervised_encoder.trained),
        encoder_lr=float(options.supervised_encoder.lr),
    )


def fullres_meta(cfg: DictConfig, data: ProblemData) -> dict[str, Any] | None:
    """What a problem's fullres cache depends on (None when the stage is off: fullres.supervision=[])."""
    supervisions = fullres_supervisions(cfg)
    if not supervisions:
        return None
    ckpt = best_checkpoint(cfg, data.problem)
    if not ckpt.is_file():
        raise StageOrderError(f"{ckpt}: no checkpoint; run the train stage first (make train / defectcam-train)")
    settings = {k: v for k, v in to_plain(cfg.fullres).items()
                if k not in ("force", "figure_images") and not (k in SETTINGS_ADDED_LATER and v == SETTINGS_ADDED_LATER[k])}
    if decoder_score_name(cfg) == str(cfg.localize.select_on):
        # Decoders kept by localize.select_on itself, as every decoder before fullres.select_on was: the same key
        # whichever value says so (all_images under localize.select_on=all_miou is that score too).
        settings.pop("select_on", None)
    return {
        "format": FULLRES_FORMAT,
        "checkpoint_sha1": file_sha1(ckpt),
        "fullres": {**settings, "supervision": supervisions},
        "starts": fullres_starts(cfg),
        # What the starting CAMs of the train images depend on (the CAMs of cams.pt are not read by training).
        "cam": {"target": str(cfg.cam.target), "tta": str(cfg.cam.tta), "fusions": to_plain(cfg.cam.fusions) or {}},
        "select_on": str(cfg.localize.select_on),
        "seed": int(cfg.seed),
        "precision": str(cfg.trainer.precision),
        "image_size": int(cfg.data.image_size),
        "image_ids_sha1": ids_hash(data.table),
    }


def fullres_dir(cfg: DictConfig, problem: int) -> Path:
    """A problem's fullres folder (cache, meta, decoders, selection.csv)."""
    return problem_dir(output_dir(cfg), problem) / FOLDER


def stale_fullres(cfg: DictConfig, data: ProblemData) -> tuple[dict[str, Any] | None, Path, str | None]:
    """(the wanted meta (None when the stage is off), the cache's path, why the cache is stale or None when fresh)."""
    wanted = fullres_meta(cfg, data)
    folder = fullres_dir(cfg, data.problem)
    meta_path, cache_path = folder / META_NAME, folder / CACHE_NAME
    if wanted is None:
        return None, cache_path, None
    if not cache_path.is_file():
        return wanted, cache_path, "there is no fullres cache"
    recorded = read_json(meta_path) if meta_path.is_file() else None
    return wanted, cache_path, stale_reason(recorded, wanted, "the decoder was trained")


def fresh_fullres(cfg: DictConfig, data: ProblemData) -> dict[str, Any] | None:
    """The meta of a fullres cache that belongs to the current best.ckpt and settings (None when the stage is off).

    A stale or missing cache is recomputed (on_stale=recompute) or refused with one line (on_stale=error)."""
    wanted, cache_path, reason = stale_fullres(cfg, data)
    if reason is None:
        return wanted
    refuse_or_warn(cfg, cache_path, reason, "fullres", f"problem {data.problem}: fullres cache stale ({reason}); remaking it (a decoder retrains "
                    "where its training settings changed)")
    return fullres_problem(cfg, data)


def load_fullres_cache(folder: Path) -> dict[str, Any]:
    """The fullres cache of a problem folder, probability maps as float32."""
    path = folder / FOLDER / CACHE_NAME
    if not path.is_file():
        raise StageOrderError(f"{path}: no fullres cache; run the fullres stage first (make fullres / defectcam-fullres)")
    cache = torch.load(path, map_location="cpu", weights_only=True)
    for part in ("val", "test"):
        cache[part]["maps"] = {m: {layer: maps.float() for layer, maps in per.items()} for m, per in cache[part]["maps"].items()}
    return cache


def decoder_path(folder: Path, method: str) -> Path:
    """Where the fullres stage keeps a problem's trained decoder of one method (fullres | supervised)."""
    return folder / FOLDER / f"decoder_{method}.pt"


def decoder_record(folder: Path, method: str) -> dict[str, Any]:
    """The stored decoder file of `method` (its weights and record); one line when it is missing or belongs to
    another best.ckpt."""
    path = decoder_path(folder, method)
    if not path.is_file():
        raise StageOrderError(f"{path}: missing; run the fullres stage first (make fullres)")
    record = torch.load(path, map_location="cpu", weights_only=True)
    if record.get("checkpoint_sha1") != file_sha1(folder / "checkpoints" / "best.ckpt"):
        raise StaleInputError(f"{path}: trained over another best.ckpt; rerun make fullres")
    return record


def load_decoder(folder: Path, method: str, net: torch.nn.Module) -> tuple[FullResolutionNet, dict[str, Any]]:
    """The full-resolution network of a problem folder (its classifier `net` + the stored decoder of `method`), in
    eval mode, and the decoder file's record; one line when it is missing or belongs to another best.ckpt."""
    path, record = decoder_path(folder, method), decoder_record(folder, method)
    misfit = StaleInputError(f"{path}: its weights do not fit the network its record describes; rerun make fullres")
    try:
        network = FullResolutionNet(net, record["decoder_channels"], int(record.get("image_channels", 0)),
                                    bool(record.get("recipe", {}).get("train_encoder", False)),
                                    str(record.get("deepest_layer", SETTINGS_ADDED_LATER["deepest_layer"])))
        missing, unexpected = network.load_state_dict(record["decoder"], strict=False)  # the classifier is `net`'s own
    except (RuntimeError, ValueError) as error:  # a weight of another shape; blocks or a layer the network cannot have
        raise misfit from error
    if unexpected or any(not key.startswith("classifier.") for key in missing):
        raise misfit
    return network.eval(), record


def part_rows(data: ProblemData, part: str) -> np.ndarray:
    """Table rows of one part, in split.csv order (the order of every cache)."""
    return np.flatnonzero(data.table["part"].to_numpy() == part)


def starting_cams(cfg: DictConfig, net: torch.nn.Module, images: Tensor, start: str, device: torch.device) -> Tensor:
    """(N, 3, S, S) normalized images -> (N, S, S) [0, 1] starting CAMs of `start` (method/layer or fusion/layers),
    made as the cams stage makes its maps (cam.target, cam.tta) and scored as localize scores them."""
    method, layer = start.split("/", 1)
    fusions = {f.name: f for f in fusions_from(cfg.cam.fusions)}
    cam_method, layers = entry_sources(method, layer, fusions)
    target = target_class(str(cfg.cam.target))
    size = (int(images.shape[-2]), int(images.shape[-1]))
    out = []
    with torch.enable_grad():  # CAMs need gradients, whatever the caller's mode
        for first in range(0, images.shape[0], int(cfg.cam.batch_size)):
            batch = images[first : first + int(cfg.cam.batch_size)].to(device)
            result = tta_cams(net, batch, layers, [cam_method], target, str(cfg.cam.tta))
            out.append(entry_scoring_maps(result.maps, method, layer, fusions, size).cpu())
    return torch.cat(out) if out else torch.zeros(0, *size)


def masks_at(masks: Tensor, size: int) -> Tensor:
    """(N, H, W) bool native masks -> (N, size, size) bool: area-averaged, then >= 0.5."""
    if masks.shape[0] == 0:
        return torch.zeros(0, size, size, dtype=torch.bool)
    return F.interpolate(masks.float().unsqueeze(1), size=(size, size), mode="area")[:, 0] >= 0.5


def decoder_score_name(cfg: DictConfig) -> str:
    """The score (miou | all_miou) that keeps a decoder's checkpoint: fullres.select_on's, or localize.select_on's."""
    return DECODER_SELECT_ON[str(cfg.fullres.select_on)] or str(cfg.localize.select_on)


def validation_score(data: ProblemData, select_on: str, report: str) -> tuple[Tensor, Callable[[Tensor], float]]:
    """The validation part's images (uint8) and a function probs (N, S, S) -> the decoder's validation score: `report`
    at the threshold that maximizes `select_on` (exact, as localize picks it), ungated, at the masks' native size.
    Reads validation masks only."""
    rows = part_rows(data, "val")
    masks = masks_tensor([data.mask_of(int(r)) for r in rows])
    defective = torch.as_tensor(data.table["label"].to_numpy()[rows] == 1)
    if not bool(defective.any()):
        raise ConfigError(f"problem {data.problem}: the validation part holds no defective image; the decoder cannot be chosen")

    def score(probs: Tensor) -> float:
        maps = probability_scoring_maps(probs, data.native_size)
        return score_at_best_threshold(sort_pixels(maps, masks, defective), None, select_on, report)[1]

    return torch.from_numpy(np.array(data.images[rows])), score


def train_set(cfg: DictConfig, data: ProblemData, net: torch.nn.Module, normalization: tuple[float, float], supervision: str,
              start: str | None, device: torch.device) -> DecoderTrainSet:
    """The train part with its supervision: seed regions of the starting CAM ('cams') or masks at the network's size."""
    rows = part_rows(data, "train")
    images = torch.from_numpy(np.array(data.images[rows]))
    labels = torch.as_tensor(data.table["label"].to_numpy()[rows] == 1)
    size = images.shape[-1]
    foreground = torch.zeros(len(rows), size, size, dtype=torch.bool)
    background = torch.zeros_like(foreground)
    defective = torch.nonzero(labels).reshape(-1)
    if supervision == "cams":
        cams = starting_cams(cfg, net, normalized(images[defective], *normalization), str(start), device)
        seeds = cfg.fullres.seeds
        foreground[defective], background[defective] = seed_regions(cams, int(seeds.erode), float(seeds.background_quantile))
    else:  # the reference reads the train part's true masks
        foreground[defective] = masks_at(masks_tensor([data.mask_of(int(rows[i])) for i in defective]), size)
    return DecoderTrainSet(images, labels, foreground, background)


def train_loader(dataset: DecoderTrainSet, recipe: DecoderRecipe) -> DataLoader:
    """steps x batch_size draws with replacement, each class equally likely (a seeded sampler)."""
    labels = dataset.labels.long()
    counts = torch.bincount(labels, minlength=2).double()
    weights = 1.0 / counts[labels]
    sampler = WeightedRandomSampler(weights, num_samples=recipe.steps * recipe.batch_size, replacement=True,
                                    generator=torch.Generator().manual_seed(recipe.seed))
    return DataLoader(dataset, batch_size=recipe.batch_size, sampler=sampler, drop_last=True, num_workers=0)


def decoder_network(cfg: DictConfig, net: torch.nn.Module, train_encoder: bool) -> FullResolutionNet:
    """The network fullres.* describes over the classifier `net` (untrained decoder)."""
    return FullResolutionNet(net, [int(c) for c in cfg.fullres.decoder_channels], int(cfg.fullres.image_channels), train_encoder,
                             str(cfg.fullres.deepest_layer))


def train_decoder(cfg: DictConfig, out: Path, net: torch.nn.Module, normalization: tuple[float, float], recipe: DecoderRecipe,
                  dataset: DecoderTrainSet, val: tuple[Tensor, Any], name: str) -> DecoderTraining:
    """Train one decoder with Lightning; returns the module holding the best validation state."""
    # Imported here: Lightning (and the torchvision it imports) costs about 3 s at start-up, which every run of the
    # stages that import this module would pay, a one-line error included; only a training needs it.
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from defectcam.models.decoder_module import DecoderProgressBar, DecoderTraining

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)  # the decoder's initial weights
    network = decoder_network(cfg, net, recipe.train_encoder)
    training = DecoderTraining(network, recipe, normalization, val[0], val[1], int(cfg.fullres.eval_batch_size))
    trainer = pl.Trainer(
        accelerator=str(cfg.trainer.accelerator), devices=1,  # one device: a decoder over frozen features is small
        precision=cfg.trainer.precision, max_steps=recipe.steps, max_epochs=1,  # the sampler draws `steps` batches: one epoch
        deterministic=cfg.trainer.deterministic,
        logger=TensorBoardLogger(save_dir=str(out), name="tensorboard", version=name),
        enable_checkpointing=False, enable_progress_bar=bool(cfg.train.progress_bar), enable_model_summary=False,
        callbacks=[DecoderProgressBar(name)] if cfg.train.progress_bar else [],
        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=max(1, min(50, recipe.steps // 10)),
    )
    with warnings.catch_warnings():
        # The frozen classifier stays in eval mode on purpose (its BatchNorm statistics must not move).
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
        trainer.fit(training, train_dataloaders=train_loader(dataset, recipe))
    return training


@dataclass(frozen=True)
class TrainedDecoder:
    """The decoder a supervision kept: its starting point (CAM name, or `masks`), validation score and weights."""

    start: str
    score: float
    state: dict[str, Tensor]
    recipe: dict[str, Any] | None = None  # a reused decoder's recorded recipe: the one it was trained with


def training_key(meta: dict[str, Any], method: str) -> dict[str, Any]:
    """What one method's trained decoder depends on: the meta without the settings that only change how maps are
    made, and without those its supervision never reads. Keyed per method, so that adding the reference or changing
    its options keeps the weak decoder (and the reverse)."""
    unread = {*INFERENCE_SETTINGS, *UNREAD_SETTINGS[method]}
    settings = {k: v for k, v in meta["fullres"].items() if k not in unread}
    settings["supervision"] = [METHOD_SUPERVISIONS[method]]
    return {**{k: v for k, v in meta.items() if k not in UNREAD_META[method]}, "fullres": settings}


def reusable_decoders(folder: Path, meta: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, TrainedDecoder]]:
    """The selection rows and kept decoders of an earlier run, for each method whose training is the same (only
    fullres.tta, fullres.eval_batch_size or another method's settings changed) and whose selection rows are that
    training's (the decoder kept, its score); empty when none is."""
    selection_path = folder / FOLDER / SELECTION_NAME
    if not selection_path.is_file():
        return [], {}
    selection = pd.read_csv(selection_path).to_dict("records")
    wanted = [DECODER_METHODS[supervision] for supervision in meta["fullres"]["supervision"]]
    chosen = {}
    for method in wanted:
        path = decoder_path(folder, method)
        record = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}
        if record.get("training") != training_key(meta, method):
            continue
        # A decoder left from a run whose selection.csv no longer lists it (dropped, then asked for again) retrains.
        if any(row["method"] == method and row.get("chosen") is True and row["layer"] == record["layer"]
               and math.isclose(float(row["val_score"]), float(record["val_score"])) for row in selection):
            chosen[method] = TrainedDecoder(record["layer"], float(record["val_score"]), record["decoder"], record.get("recipe"))
    rows = [row for row in selection if row["method"] in chosen]
    for row in rows:  # rows written before selection.csv named its score were kept by localize.select_on's own
        if not isinstance(row.get("val_score_of"), str):
            row["val_score_of"] = row["select_on"]
    return rows, chosen


def train_decoders(cfg: DictConfig, data: ProblemData, net: torch.nn.Module, normalization: tuple[float, float],
                   device: torch.device, starts: list[str], supervisions: list[str]) -> tuple[list[dict[str, Any]], dict[str, TrainedDecoder]]:
    """One decoder per supervision and starting CAM; per method the one validation scores best (ties: the first
    listed). Returns the selection rows (every decoder trained) and the kept decoder of each method."""
    out = problem_dir(output_dir(cfg), data.problem)
    scored = decoder_score_name(cfg)
    val = validation_score(data, str(cfg.localize.select_on), scored)
    selection, chosen = [], {}
    for supervision in supervisions:
        method, recipe = DECODER_METHODS[supervision], recipe_of(cfg, supervision)
        candidates = starts if supervision == "cams" else [MASKS_LAYER]
        for start in candidates:
            log.info("problem %d: training the %s decoder (%s)", data.problem, method, start)
            dataset = train_set(cfg, data, net, normalization, supervision, start if supervision == "cams" else None, device)
            started = time.perf_counter()
            training = train_decoder(cfg, out, net, normalization, recipe, dataset, val, f"{method}_{start.replace('/', '_')}")
            selection.append({"method": method, "layer": start, "best_step": training.best_step, "val_score": training.best_score,
                              "val_score_of": scored, "select_on": str(cfg.localize.select_on), "train_time_s": round(time.perf_counter() - started, 2)})
            if method not in chosen or training.best_score > chosen[method].score:
                chosen[method] = TrainedDecoder(start, training.best_score, training.best_state)
        for row in selection:
            if row["method"] == method:
                row["chosen"] = row["layer"] == chosen[method].start
        if len(candidates) > 1:
            log.info("problem %d: starting CAM chosen on validation: %s (val %s at the %s threshold: %.4f)", data.problem,
                     chosen[method].start, scored, cfg.localize.select_on, chosen[method].score)
    return selection, chosen


def decoder_maps(cfg: DictConfig, data: ProblemData, net: torch.nn.Module, normalization: tuple[float, float],
                 chosen: dict[str, TrainedDecoder], device: torch.device) -> dict[str, Any]:
    """The val and test parts' probability maps of every kept decoder (float16, input size), with their rows."""
    networks = {method: decoder_network(cfg, net, recipe_of(cfg, METHOD_SUPERVISIONS[method]).train_encoder) for method in chosen}
    for method, decoder in chosen.items():
        networks[method].load_state_dict(decoder.state, strict=False)
        networks[method].to(device).eval()
    parts = {}
    for part in ("val", "test"):
        rows = part_rows(data, part)
        images = normalized(torch.from_numpy(np.array(data.images[rows])), *normalization)
        maps: dict[str, dict[str, Tensor]] = {}
        for method, decoder in chosen.items():
            network = networks[method]
            probs = batched_maps(network, images, int(cfg.fullres.eval_batch_size), str(cfg.fullres.tta), device)
            maps[method] = {decoder.start: stored_probabilities(probs)}
        parts[part] = {"rows": torch.as_tensor(rows), "maps": maps}
    return parts


def fullres_problem(cfg: DictConfig, data: ProblemData) -> dict[str, Any] | None:
    """Train (or reuse) a problem's decoders, write their val/test maps, the decoders and the figure; returns the meta."""
    meta = fullres_meta(cfg, data)
    if meta is None:
        return None
    out = problem_dir(output_dir(cfg), data.problem)
    folder = out / FOLDER
    meta_path = folder / META_NAME
    if meta_path.is_file() and (folder / CACHE_NAME).is_file() and read_json(meta_path) == meta and not cfg.fullres.force:
        log.info("problem %d: fullres cache up to date", data.problem)
        return meta
    device = inference_device(cfg)
    module, _ = trained_problem(cfg, data, device)
    net, normalization = module.net.eval(), tuple(float(v) for v in module.hparams.normalization)
    selection, chosen = ([], {}) if cfg.fullres.force else reusable_decoders(out, meta)
    if chosen:
        log.info("problem %d: %s decoder(s) trained with these settings found; only their maps are remade", data.problem,
                 ", ".join(chosen))
    supervisions = fullres_supervisions(cfg)
    missing = [supervision for supervision in supervisions if DECODER_METHODS[supervision] not in chosen]
    if missing:
        rows, trained = train_decoders(cfg, data, net, normalization, device, meta["starts"], missing)
        selection, chosen = selection + rows, {**chosen, **trained}
    order = [DECODER_METHODS[supervision] for supervision in supervisions]
    selection = sorted(selection, key=lambda row: order.index(row["method"]))  # stable: a method's rows keep their order
    chosen = {method: chosen[method] for method in order}
    cache = {"meta": meta, **decoder_maps(cfg, data, net, normalization, chosen, device)}
    meta_path.unlink(missing_ok=True)  # a cache without its meta is never trusted
    for method, decoder in chosen.items():
        record = {"format": FULLRES_FORMAT, "method": method, "layer": decoder.start, "decoder": decoder.state,
                  "val_score": decoder.score, "training": training_key(meta, method),
                  "decoder_channels": [int(c) for c in cfg.fullres.decoder_channels], "deepest_layer": str(cfg.fullres.deepest_layer),
                  "image_channels": int(cfg.fullres.image_channels), "image_size": int(cfg.data.image_size),
                  "normalization": list(normalization), "checkpoint_sha1": meta["checkpoint_sha1"], "tta": str(cfg.fullres.tta),
                  "recipe": decoder.recipe or asdict(recipe_of(cfg, METHOD_SUPERVISIONS[method]))}
        with atomic_path(decoder_path(out, method)) as tmp:
            torch.save(record, tmp)
    with atomic_path(folder / SELECTION_NAME) as tmp:
        pd.DataFrame(selection).to_csv(tmp, index=False)
    with atomic_path(folder / CACHE_NAME) as tmp:
        torch.save(cache, tmp)
    write_json(meta_path, meta)
    draw_fullres_figure(cfg, data, cache["test"], out, {method: decoder.start for method, decoder in chosen.items()})
    return meta


def draw_fullres_figure(cfg: DictConfig, data: ProblemData, part: dict[str, Any], out: Path, starts: dict[str, str]) -> None:
    """figures/fullres.png: a few defective test images, input | ground truth | the starting CAM | each decoder's map."""
    from defectcam.report.figures import cam_grid, save_figure  # matplotlib: 0.8 s of start-up, only to draw

    rows = part["rows"].numpy()
    picks = [i for i, row in enumerate(rows) if data.table["label"].iat[row] == 1][: int(cfg.fullres.figure_images)]
    if not picks:
        return
    size = data.native_size
    columns: dict[str, np.ndarray] = {}
    start = starts.get("fullres")
    if start is not None:
        fresh_cams(cfg, data)
        cams = load_cam_cache(out)["test"]["maps"]
        method, layer = start.split("/", 1)
        fusions = {f.name: f for f in fusions_from(cfg.cam.fusions)}
        picked = {m: {name: maps[picks] for name, maps in per.items()} for m, per in cams.items()}
        columns[f"start: {start}"] = entry_scoring_maps(picked, method, layer, fusions, size).numpy()
    for method, per in part["maps"].items():
        for layer, maps in per.items():
            columns[method if method == "fullres" else f"{method} ({layer})"] = probability_scoring_maps(maps[picks].float(), size).numpy()
    images = np.stack([np.asarray(data.images[rows[i]]) for i in picks])
    masks = np.stack([data.mask_of(int(rows[i])) for i in picks])
    ids = [str(data.table["image_id"].iat[rows[i]]) for i in picks]
    title = f"problem {data.problem}: full-resolution maps (defect probability) beside their starting CAM"
    save_figure(cam_grid(images, masks, columns, title, ids), out / "figures" / "fullres.png")


def run_fullres(cfg: DictConfig) -> None:
    """The fullres stage over every problem (nothing to do when fullres.supervision is empty)."""
    require_all_trained(cfg)
    for data in prepare_data(cfg).values():
        fullres_problem(cfg, data)


main = stage_entry("fullres", run_fullres)
