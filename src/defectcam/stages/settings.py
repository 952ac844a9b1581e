"""Read stage settings out of the composed config: validate enumerated values, build plain objects."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from defectcam.cams.methods import METHODS
from defectcam.cams.tta import TTA_SETS
from defectcam.data.prepare import SplitSettings
from defectcam.data.splits import PARTS
from defectcam.errors import ConfigError
from defectcam.evaluation.decision import DECISIONS
from defectcam.fullres import DECODER_METHODS, DECODER_SELECT_ON
from defectcam.fullres.network import DEEPEST_LAYERS, feature_count
from defectcam.localization.baselines import BASELINES
from defectcam.localization.entries import fusions_from
from defectcam.localization.products import product_method
from defectcam.localization.selection import GATES, POSTPROCESSES, SELECT_ON

CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": ("synthetic", "dagm"),
    "data.split": ("official", "paper"),
    "data.normalization": ("train", "fixed"),
    "model.arch": ("resnet18", "resnet34", "resnet50", "resnet101"),
    "cam.target": ("defect", "predicted"),
    "cam.tta": tuple(TTA_SETS),
    "localize.select_on": SELECT_ON,
    "on_stale": ("recompute", "error"),
    "evaluate.decision": DECISIONS,
    "fullres.tta": tuple(TTA_SETS),
    "fullres.deepest_layer": DEEPEST_LAYERS,
    "fullres.select_on": tuple(DECODER_SELECT_ON),
    "predict.gate": GATES,
    "predict.postprocess": POSTPROCESSES,
    "predict.backend": ("torch", "onnx"),  # onnx: the problem's export/localizer.onnx in onnxruntime
}
# predict.gate / postprocess / backend left unset (null) take these (predict.py, predict_setting), or with
# predict.model the file's own gate and post-process.
PREDICT_DEFAULTS = {"gate": "classifier", "postprocess": "none", "backend": "torch"}
UNSET_IS_DEFAULT = tuple(f"predict.{name}" for name in PREDICT_DEFAULTS)
FULLRES_SUPERVISIONS = ("cams", "masks")
# DAGM 2007 has ten problems, Class1..Class10; the synthetic generator knows the same ten (PROBLEMS).
DAGM_PROBLEMS: tuple[int, ...] = tuple(range(1, 11))
MIN_IMAGE_SIDE = 32  # ResNet's total stride: a smaller image carries less than one cell of the last stage
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit


def validate(cfg: DictConfig) -> None:
    """Refuse unknown enumerated values and names (methods, layers, fusions, baselines...) with one line listing the choices.

    Every stage calls it first (directly or through prepare_data), so a typo stops before any file is written.
    """
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is None and key in UNSET_IS_DEFAULT:
            continue
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    problems = problems_of(cfg)
    if not problems or any(p not in DAGM_PROBLEMS for p in problems):
        raise ConfigError(f"data.problems: {problems} must be a non-empty list of DAGM class numbers (1..10)")
    _check_sizes(cfg)
    _check_number(cfg, "localize.n_thresholds", minimum=2, integer=True)
    _check_thresholds(cfg, "localize.fixed_thresholds")
    _check_number(cfg, "localize.bootstrap", minimum=1, integer=True)
    if cfg.localize.threads is not None:
        _check_number(cfg, "localize.threads", minimum=1, integer=True)
    _check_number(cfg, "evaluate.latency_images", minimum=1, integer=True)
    _check_number(cfg, "evaluate.warmup", minimum=0, integer=True)
    _check_names(cfg)
    _check_fullres(cfg)
    if cfg.localize.threshold is not None:
        _check_number(cfg, "localize.threshold", minimum=0.0, maximum=1.0)
    if cfg.data.normalization == "fixed":
        missing = [p for p in problems if cfg.data.mean_std is None or p not in cfg.data.mean_std]
        if missing:
            raise ConfigError(f"data.mean_std: no [mean, std] for problem(s) {missing} (data.normalization=fixed)")


def _check_sizes(cfg: DictConfig) -> None:
    """Image size, batch sizes, workers and seeds: integers in range (a 0 would fail deep inside cv2 or torch)."""
    _check_number(cfg, "data.image_size", minimum=MIN_IMAGE_SIDE, integer=True)
    for key in ("data.batch_size", "data.eval_batch_size", "cam.batch_size", "predict.batch_size"):
        _check_number(cfg, key, minimum=1, integer=True)
    for key in ("data.num_workers", "cam.figure_images"):
        _check_number(cfg, key, minimum=0, integer=True)
    for key in ("seed", "data.split_seed"):
        _check_number(cfg, key, minimum=0, maximum=MAX_SEED, integer=True)


def _check_thresholds(cfg: DictConfig, key: str) -> None:
    """A list of thresholds on the scoring maps, which are normalized to [0, 1] (an empty list is fine)."""
    values = to_plain(OmegaConf.select(cfg, key))
    if not isinstance(values, list):
        raise ConfigError(f"{key}: {values!r} must be a list of numbers in [0, 1], e.g. {key}=[0.5]")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:  # NaN fails too
            raise ConfigError(f"{key}: {value!r} must be a number in [0, 1], the scoring maps' range")


def _check_number(cfg: DictConfig, key: str, minimum: float, maximum: float | None = None, integer: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    kind = int if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, float) and not math.isfinite(value))
            or value < minimum or (maximum is not None and value > maximum)):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{key}: {value!r} must be {'an integer' if integer else 'a number'} {bounds}")


def _check_names(cfg: DictConfig) -> None:
    """Every name a user types under cam.* and localize.* names something that exists (before any file is written)."""
    methods = _name_list(cfg, "cam.methods")
    _check_known("cam.methods", methods, METHODS)
    layers = _name_list(cfg, "cam.layers")
    for layer in layers:
        _check_layer(str(cfg.model.arch), layer)
    _check_known("cam.parts", _name_list(cfg, "cam.parts"), PARTS)
    fused = _check_fusions(cfg, methods, layers)
    baselines = _name_list(cfg, "localize.baselines", allow_empty=True)
    _check_known("localize.baselines", baselines, tuple(BASELINES))
    decoders = [DECODER_METHODS[s] for s in fullres_supervisions(cfg)]
    products = _name_list(cfg, "localize.fullres_products", allow_null=True, allow_empty=True)
    for name in products or []:
        _check_cached("localize.fullres_products", name, methods, METHODS, "cam.methods")
    if products and DECODER_METHODS["cams"] not in decoders:
        # null stays lenient (an experiment that scores products whenever there is a decoder); a list asks for them
        raise ConfigError(f"localize.fullres_products: {products} multiply the weak decoder's maps, which "
                          f"fullres.supervision={fullres_supervisions(cfg)} does not train; add cams to it, or set []")
    if DECODER_METHODS["cams"] in decoders:
        decoders += [product_method(name) for name in (methods if products is None else products)]
    for name in _name_list(cfg, "localize.methods", allow_null=True) or []:
        _check_scored_name(name, methods, fused + decoders, baselines)
    _check_known("localize.layers", _name_list(cfg, "localize.layers", allow_null=True) or [], layers, "in cam.layers:")
    _check_known("localize.gates", _name_list(cfg, "localize.gates"), GATES)
    _check_known("localize.postprocess", _name_list(cfg, "localize.postprocess"), POSTPROCESSES)


def _name_list(cfg: DictConfig, key: str, allow_null: bool = False, allow_empty: bool = False) -> list[str] | None:
    """The list of names at `key` as strings; ConfigError unless it is a list (non-empty unless allow_empty)."""
    value = OmegaConf.select(cfg, key)
    null_hint = ", or null for all" if allow_null else ""
    if value is None and allow_null:
        return None
    # A bare string would be read letter by letter downstream (list("layercam")), so it is refused.
    if not (OmegaConf.is_list(value) or isinstance(value, (list, tuple))):
        raise ConfigError(f"{key}: {to_plain(value)!r} must be a list of names, e.g. {key}=[{to_plain(value)}]{null_hint}")
    names = [str(name) for name in value]
    if not names and not allow_empty:
        raise ConfigError(f"{key}: the list is empty; name at least one{null_hint}")
    return names


def _check_known(key: str, names: Sequence[str], choices: Sequence[str], among: str = "one of") -> None:
    """ConfigError naming the first of `names` not in `choices`, and listing the choices."""
    unknown = next((name for name in names if name not in choices), None)
    if unknown is not None:
        raise ConfigError(f"{key}: {unknown!r} is not {among} {', '.join(choices)}")


def _check_fusions(cfg: DictConfig, methods: list[str], layers: list[str]) -> list[str]:
    """cam.fusions fuse cached maps only; returns the names of the fused maps (as localize.methods selects them)."""
    config = to_plain(cfg.cam.fusions) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"cam.fusions: {config!r} must map a fusion name to {{method: ..., layers: [...]}}")
    for name, spec in config.items():
        key = f"cam.fusions.{name}"
        if not isinstance(spec, dict) or sorted(spec) != ["layers", "method"]:
            raise ConfigError(f"{key}: {spec!r} must be {{method: <a cam.methods name>, layers: [<cam.layers names>]}}")
        _check_cached(f"{key}.method", str(spec["method"]), methods, METHODS, "cam.methods")
        if not isinstance(spec["layers"], list) or not spec["layers"]:
            raise ConfigError(f"{key}.layers: {spec['layers']!r} must be a non-empty list of cam.layers names")
        among = f"in cam.layers (or drop the fusion: ~{key}):"
        _check_known(f"{key}.layers", [str(layer) for layer in spec["layers"]], layers, among)
    # fusions_from decides the kinds (by name prefix) and the extra '<multiplicative>_geometric' map.
    return [fusion.name for fusion in fusions_from(config)]


def _check_cached(key: str, name: str, cached: Sequence[str], known: Sequence[str], source: str) -> None:
    """`name` must be in `cached`; a known name that is not gets 'add it to <source>', an unknown one the choices."""
    if name in cached:
        return
    if name in known:
        raise ConfigError(f"{key}: {name!r} is not computed; add it to {source} (now {', '.join(cached) or 'empty'})")
    raise ConfigError(f"{key}: {name!r} is not one of {', '.join(known)}")


def _check_scored_name(name: str, methods: list[str], fused: list[str], baselines: list[str]) -> None:
    """A localize.methods name: a cached CAM method, a fused map or a configured baseline."""
    key = "localize.methods"
    if name in methods or name in fused or name in baselines:
        return
    # A real method or baseline that was not asked for: say where to add it (both calls raise).
    if name in METHODS:
        _check_cached(key, name, methods, METHODS, "cam.methods")
    if name in BASELINES:
        _check_cached(key, name, baselines, tuple(BASELINES), "localize.baselines")
    choices = ", ".join([*methods, *fused, *baselines])
    raise ConfigError(f"{key}: {name!r} is not one of {choices} (cached methods, fusions, decoders, baselines; null for all)")


def _check_fullres(cfg: DictConfig) -> None:
    """cfg.fullres: known supervisions, starting CAMs that are computed, numbers in range."""
    fullres_starts(cfg)
    for key in ("steps", "batch_size", "eval_every", "eval_batch_size", "seeds.patch", "pairwise.radius"):
        _check_number(cfg, f"fullres.{key}", minimum=1, integer=True)
    for key in ("seeds.foreground", "seeds.background", "seeds.erode", "figure_images", "image_channels"):
        _check_number(cfg, f"fullres.{key}", minimum=0, integer=True)
    for key in ("lr", "pairwise.sigma_xy", "pairwise.sigma_intensity", "supervised_encoder.lr"):
        _check_number(cfg, f"fullres.{key}", minimum=1e-12)
    for key in ("weight_decay", "pairwise.weight", "size.weight"):
        _check_number(cfg, f"fullres.{key}", minimum=0.0)
    _check_number(cfg, "fullres.seeds.background_quantile", minimum=1e-6, maximum=1 - 1e-6)
    if not isinstance(cfg.fullres.supervised_encoder.trained, bool):
        raise ConfigError(f"fullres.supervised_encoder.trained: {cfg.fullres.supervised_encoder.trained!r} must be true or false")
    if cfg.fullres.crop is not None:
        _check_number(cfg, "fullres.crop", minimum=32, integer=True)  # at least the image's size: whole images
    _check_number(cfg, "fullres.size.low", minimum=1e-6, maximum=1.0)
    _check_number(cfg, "fullres.size.high", minimum=float(cfg.fullres.size.low), maximum=1.0)
    channels = to_plain(cfg.fullres.decoder_channels)
    # The U-Net decoder climbs from the deepest layer's scale (layer4: stride 32), one block per doubling; the last
    # possible block reaches the input's scale.
    deepest = str(cfg.fullres.deepest_layer)
    high = feature_count(deepest) - 1
    if (not isinstance(channels, list) or not 1 <= len(channels) <= high
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)):
        raise ConfigError(f"fullres.decoder_channels: {channels!r} must be 1 to {high} positive integers (one per decoder "
                          f"block, from fullres.deepest_layer {deepest}'s scale up), e.g. {[128, 64, 32, 16, 16][5 - high:]}")


def fullres_supervisions(cfg: DictConfig) -> list[str]:
    """fullres.supervision as a list (a bare name, as in fullres.supervision=masks, is a list of one)."""
    value = OmegaConf.select(cfg, "fullres.supervision")
    names = [str(value)] if isinstance(value, str) else _name_list(cfg, "fullres.supervision", allow_empty=True) or []
    _check_known("fullres.supervision", names, FULLRES_SUPERVISIONS)
    return names


def fullres_starts(cfg: DictConfig) -> list[str]:
    """fullres.start as 'method/layer' names (a fusion as 'name/layer1+layer2...'); ConfigError for a name whose
    maps are not computed (a method or layer outside cam.methods / cam.layers, an unknown fusion)."""
    names = _name_list(cfg, "fullres.start", allow_empty="cams" not in fullres_supervisions(cfg)) or []
    fusions = {f.name: f for f in fusions_from(to_plain(cfg.cam.fusions) or {})}
    methods, layers = [str(m) for m in cfg.cam.methods], [str(layer) for layer in cfg.cam.layers]
    starts = []
    for name in names:
        method, _, layer = name.partition("/")
        if method in fusions:
            fused = "+".join(fusions[method].layers)
            if layer not in ("", fused):
                raise ConfigError(f"fullres.start: {name!r}: the fusion {method} is of {fused}; write {method} or {method}/{fused}")
            starts.append(f"{method}/{fused}")
            continue
        if not layer:
            choices = ", ".join([*(f"{m}/<layer>" for m in methods), *fusions])
            raise ConfigError(f"fullres.start: {name!r} is neither method/layer nor a cam.fusions name; use one of {choices}")
        _check_cached("fullres.start", method, methods, METHODS, "cam.methods")
        _check_known("fullres.start", [layer], layers, "in cam.layers:")
        starts.append(f"{method}/{layer}")
    return starts


@dataclass(frozen=True)
class BackboneLayers:
    """The module paths of a backbone: why each one cannot be hooked ('' when it can), and blocks per stage."""

    problems: dict[str, str]
    blocks: tuple[int, ...]

    def summary(self) -> str:
        """'layer1, ..., layer4 or a block layer1.0..2, ...': the paths a user usually means, in one line."""
        stages = [f"layer{i}" for i in range(1, len(self.blocks) + 1)]
        ranges = [f"{stage}.0..{count - 1}" for stage, count in zip(stages, self.blocks)]
        return f"{', '.join(stages)} or a block {', '.join(ranges)} (e.g. layer3.4)"


@lru_cache(maxsize=None)
def backbone_layers(arch: str) -> BackboneLayers:
    """The module paths of torchvision's `arch`, from one forward pass on the meta device (no memory, no weights)."""
    import torchvision  # only here: the other checks need none of it

    with torch.device("meta"):
        net = getattr(torchvision.models, arch)(weights=None)
    calls: dict[str, list[int]] = {}
    handles = [module.register_forward_hook(_ndim_recorder(name, calls)) for name, module in net.named_modules() if name]
    try:
        with torch.no_grad():
            net(torch.empty(1, 3, 64, 64, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    problems = {name: _hook_problem(ndims) for name, ndims in calls.items()}
    return BackboneLayers(problems, tuple(len(getattr(net, f"layer{i}")) for i in range(1, 5)))


def _hook_problem(ndims: list[int]) -> str:
    """Why a module whose outputs had these ndims cannot be hooked ('' if it can)."""
    # The two conditions the CAM extractor's hook enforces: one run per forward, a (N, K, h, w) output.
    if len(ndims) > 1:
        return "runs more than once per forward pass"
    return "" if ndims[0] == 4 else "does not output a (N, K, h, w) map"


def _ndim_recorder(name: str, calls: dict[str, list[int]]) -> Callable[..., None]:
    """A forward hook appending the output's ndim (0 for a non-tensor) to calls[name] on every run."""

    def hook(_module: torch.nn.Module, _inputs: tuple, output: object) -> None:
        calls.setdefault(name, []).append(output.ndim if isinstance(output, torch.Tensor) else 0)

    return hook


# Blocks per stage of torchvision's ResNets (tests/test_names.py holds them to backbone_layers'). A stage or one of
# its blocks is the usual cam.layers entry: it is checked from this table, so that validation, which every run of
# every stage makes first, does not import torchvision (over a second) to build the network on the meta device.
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def _check_layer(arch: str, path: str) -> None:
    """A cam.layers entry must be a module path of `arch` that a CAM can hook."""
    blocks = RESNET_BLOCKS.get(arch, ())
    if path in {f"layer{s + 1}" for s in range(len(blocks))} | {f"layer{s + 1}.{k}" for s, n in enumerate(blocks) for k in range(n)}:
        return  # a stage, or one of its blocks, spelled as named_modules spells it
    layers = backbone_layers(arch)
    if path not in layers.problems:
        raise ConfigError(f"cam.layers: {path!r} is not a module path of {arch}; use {layers.summary()}")
    if layers.problems[path]:
        raise ConfigError(f"cam.layers: {path!r} of {arch} {layers.problems[path]}; use {layers.summary()}")


def train_signature(cfg: DictConfig) -> dict[str, Any]:
    """The settings a trained model depends on (a finished problem is reused, and last.ckpt resumed, only when
    they are equal). Devices, nodes and strategy are in: under DDP each rank draws its own batch, so the
    effective batch is batch_size x devices x nodes."""
    keys = ("model", "optim", "trainer.max_epochs", "trainer.precision", "trainer.devices", "trainer.num_nodes",
            "trainer.strategy", "data.image_size", "data.augment", "data.sampler", "data.batch_size",
            "data.normalization", "train.monitor", "train.early_stopping", "seed")
    return {key: to_plain(OmegaConf.select(cfg, key)) for key in keys}


# How a classifier was run, not which classifier it is: a model trained on two GPUs in bf16 is evaluated, explained
# and decoded on one device or the CPU.
RUNTIME_TRAIN_KEYS = ("trainer.precision", "trainer.devices", "trainer.num_nodes", "trainer.strategy")


def classifier_change(recorded: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, recorded value, wanted value) of the first train_signature setting, other than how training ran
    (RUNTIME_TRAIN_KEYS), on which a trained classifier's record and a run's settings differ; None when they agree.

    Only the record's keys count: a setting newer than the record (an older defectcam's summary) is not a change. A
    group recorded whole and replaced whole (a scheduler by null) is named by the group's key."""
    for key, was in recorded.items():
        name = f"{prefix}{key}"
        if name in RUNTIME_TRAIN_KEYS or key not in wanted:
            continue
        now = wanted[key]
        if isinstance(was, Mapping) and isinstance(now, Mapping):
            change = classifier_change(was, now, f"{name}.")
            if change:
                return change
        elif was != now:
            return name, was, now
    return None


def hydra_value(value: Any) -> str | None:
    """`value` as a Hydra override on the command line writes it (null, true, 2, [flips,rot90], 'a text'), so a
    message can offer an override that can be pasted; None for a mapping (a group is not one override)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # Quoted where Hydra would read another type (a number, null, true) or split it (spaces, commas, brackets).
        plain = re.fullmatch(r"[A-Za-z_][\w./-]*", value) and value.lower() not in ("null", "true", "false", "nan", "inf")
        return value if plain else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        items = [hydra_value(item) for item in value]
        return None if any(item is None for item in items) else "[" + ",".join(items) + "]"  # type: ignore[arg-type]
    return None


def setting_change(recorded: Mapping[str, Any], wanted: Mapping[str, Any],
                   omitted: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """(key, "<key> was <recorded value>, now <wanted value>") for the first setting whose recorded value differs
    from the wanted one (wanted's keys first, then keys only the record has), or None when they agree.

    `omitted`: values a meta leaves out at their default (cam_meta writes no tta for tta=none, so caches made before
    cam.tta existed stay valid); a missing key reads as that value. A key missing without one reads 'not recorded'
    (a meta of an older defectcam) or 'not set', never Python's None.
    """
    omitted = omitted or {}
    missing = object()

    def value_of(meta: Mapping[str, Any], key: str) -> Any:
        return meta[key] if key in meta else omitted.get(key, missing)

    for key in {**wanted, **recorded}:
        was, now = value_of(recorded, key), value_of(wanted, key)
        if was != now:
            was_text = "not recorded" if was is missing else repr(was)
            now_text = "not set" if now is missing else repr(now)
            return key, f"{key} was {was_text}, now {now_text}"
    return None


def to_plain(value: Any) -> Any:
    """A config node as plain Python (for JSON and comparison)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def problems_of(cfg: DictConfig) -> list[int]:
    """data.problems as a sorted list of ints (a bare int is accepted too)."""
    problems = cfg.data.problems
    if isinstance(problems, int):
        return [problems]
    try:
        return sorted({int(p) for p in problems})
    except (TypeError, ValueError):
        raise ConfigError(f"data.problems: {problems!r} must be a list of class numbers, e.g. [1,2]") from None


def output_dir(cfg: DictConfig) -> Path:
    """The experiment's output folder, absolute."""
    return Path(cfg.paths.output_dir).expanduser().resolve()


def split_settings(cfg: DictConfig) -> SplitSettings:
    """The settings that decide a split, from cfg.data (its own seed: training seeds share one split)."""
    return SplitSettings(
        kind=str(cfg.data.split),
        seed=int(cfg.data.split_seed),
        val_fraction=float(cfg.data.val_fraction),
        test_fraction=float(cfg.data.test_fraction),
    )
