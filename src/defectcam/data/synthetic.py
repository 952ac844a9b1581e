"""Synthetic stand-in for DAGM 2007, written in the real dataset's exact folder layout.

Each problem pairs a texture family with a defect model (see `PROBLEMS`). Every image is drawn from
its own seeded generator, so output is byte-identical for a spec and a problem does not depend on
which other problems are generated. The tree is built beside `root` and renamed into place, with
`synthetic_spec.json` written last; an equal spec already at `root` is reused, and a tree with the
same settings is extended in place by missing problems. A file lock beside `root` makes concurrent
jobs (a Hydra multirun) take turns.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image
from tqdm import tqdm

from defectcam.data.synthetic_defects import DEFECTS, Ellipse, apply_defect, deviate
from defectcam.data.synthetic_textures import TEXTURES, Texture
from defectcam.errors import ConfigError, DatasetError
from defectcam.io import temp_dir, write_text

SPEC_FILE = "synthetic_spec.json"
GENERATOR_VERSION = 1  # bump when the rendering changes, so stale trees are regenerated
SPLIT_IDS = {"Train": 0, "Test": 1}
MIN_IMAGE_SIZE = 32
_CHUNK = 25  # images per parallel task
_PARALLEL_MIN_PIXELS = 250 * 128 * 128  # below this, starting processes costs more than it saves


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; equal specs give byte-identical trees."""

    problems: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    image_size: int = 128
    n_train: int = 200  # images per problem in Train
    n_test: int = 100  # images per problem in Test
    defect_fraction: float = 0.3
    deviation_fraction: float = 0.15  # share of defect-free images carrying a harmless deviation
    contrast: float = 1.0  # global defect-contrast multiplier (difficulty knob)
    seed: int = 0

    def __post_init__(self) -> None:
        # configs hand over lists (Hydra ListConfig); a tuple keeps the spec hashable and comparable
        object.__setattr__(self, "problems", tuple(int(p) for p in self.problems))


@dataclass(frozen=True)
class ProblemModel:
    """One problem: texture family and parameters, defect model, and the grey-level mapping."""

    texture: str
    defect: str
    mean: float  # grey level of the texture mean, as a fraction of 255
    gain: float  # grey levels per texture unit, as a fraction of 255
    scale: float = 1.0  # texture frequency multiplier
    angle_deg: float = 0.0  # base orientation of directional textures
    defect_size: float = 1.0  # defect (and ellipse) size multiplier
    defect_contrast: float = 1.0  # defect intensity multiplier, on top of the spec's contrast


# 1-6 are the development problems; 7-10 reuse the families with other parameters and pairings.
PROBLEMS: dict[int, ProblemModel] = {
    1: ProblemModel("brushed_metal", "scratch", mean=0.32, gain=0.055),
    2: ProblemModel("blotchy", "stain", mean=0.45, gain=0.075),
    3: ProblemModel("woven", "missing_thread", mean=0.52, gain=0.06, angle_deg=8.0),
    4: ProblemModel("fine_speckle", "pit_cluster", mean=0.64, gain=0.05),
    5: ProblemModel("gradient_mottle", "bright_spot", mean=0.45, gain=0.045),
    6: ProblemModel("cellular", "rough_patch", mean=0.42, gain=0.075),
    7: ProblemModel("cellular", "stain", mean=0.55, gain=0.06, scale=1.6, defect_contrast=1.2),
    8: ProblemModel("brushed_metal", "scratch", mean=0.4, gain=0.05, scale=1.3, angle_deg=90.0),
    9: ProblemModel("blotchy", "rough_patch", mean=0.38, gain=0.07, scale=1.8, defect_size=0.85),
    10: ProblemModel(
        "fine_speckle", "bright_spot", mean=0.5, gain=0.05, scale=0.6, defect_size=0.9,
        defect_contrast=1.3,
    ),
}


@dataclass(frozen=True)
class ImagePlan:
    """One image of a split: its file number and what it carries."""

    number: int
    defective: bool
    deviation: bool


@dataclass(frozen=True)
class Sample:
    """A rendered image, the same image without its defect, and the defect's label."""

    image: np.ndarray  # uint8 (n, n)
    clean: np.ndarray  # uint8 (n, n); equals `image` for defect-free samples
    mask: np.ndarray | None  # uint8 (n, n) in {0, 255}, only for defective samples
    ellipse: Ellipse | None


def validate_spec(spec: SyntheticSpec) -> None:
    """Raise ConfigError for a spec the generator cannot honour."""
    unknown = sorted(set(spec.problems) - set(PROBLEMS))
    if unknown or not spec.problems or len(set(spec.problems)) != len(spec.problems):
        raise ConfigError(
            f"synthetic problems must be distinct values in 1..10, got {spec.problems}"
        )
    if spec.image_size < MIN_IMAGE_SIZE:
        raise ConfigError(
            f"synthetic image_size must be >= {MIN_IMAGE_SIZE}, got {spec.image_size}"
        )
    if spec.n_train < 1 or spec.n_test < 1 or spec.n_train + spec.n_test > 9999:
        raise ConfigError(
            f"synthetic n_train and n_test must be >= 1 with a sum <= 9999 (4-digit names), "
            f"got {spec.n_train} and {spec.n_test}"
        )
    for name in ("defect_fraction", "deviation_fraction"):
        if not 0.0 <= getattr(spec, name) <= 1.0:
            raise ConfigError(f"synthetic {name} must be in [0, 1], got {getattr(spec, name)}")
    if spec.contrast <= 0:
        raise ConfigError(f"synthetic contrast must be > 0, got {spec.contrast}")
    if spec.seed < 0:
        raise ConfigError(f"synthetic seed must be >= 0, got {spec.seed}")


def defect_count(n: int, fraction: float) -> int:
    """Defective images in a split of `n`: round(fraction * n), at least 1 when n >= 2."""
    count = round(fraction * n)
    return max(count, 1) if n >= 2 and fraction > 0 else count


def split_numbers(spec: SyntheticSpec, split: str) -> range:
    """File numbers of a split, as DAGM classes 1-6: Test first, then Train."""
    if split == "Test":
        return range(1, spec.n_test + 1)
    return range(spec.n_test + 1, spec.n_test + spec.n_train + 1)


def plan_split(spec: SyntheticSpec, problem: int, split: str) -> list[ImagePlan]:
    """Which images of a split are defective or deviating: a seeded shuffle with exact counts."""
    numbers = split_numbers(spec, split)
    n = len(numbers)
    n_defect = defect_count(n, spec.defect_fraction)
    n_deviation = round(spec.deviation_fraction * (n - n_defect))
    order = np.random.default_rng([spec.seed, problem, SPLIT_IDS[split]]).permutation(n)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return [
        ImagePlan(number, bool(r < n_defect), bool(n_defect <= r < n_defect + n_deviation))
        for number, r in zip(numbers, rank)
    ]


def _to_grey(field: np.ndarray, mean: float, gain: float) -> np.ndarray:
    """Map a texture field to uint8 grey levels."""
    # float64 throughout: a float32 path would round differently from the defective image's
    grey = 255.0 * (mean + gain * field.astype(np.float64))
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def render_sample(
    problem: int,
    image_size: int,
    seed: int,
    split_id: int,
    number: int,
    defective: bool,
    deviation: bool = False,
    contrast: float = 1.0,
) -> Sample:
    """Render one image; its texture, defect and deviation come from separate seeded streams."""
    model = PROBLEMS[problem]
    texture_fn = TEXTURES[model.texture]
    seeds = np.random.SeedSequence([seed, problem, split_id, number]).spawn(3)
    tex_rng, defect_rng, deviation_rng = (np.random.default_rng(s) for s in seeds)
    texture: Texture = texture_fn(tex_rng, image_size, model.scale, model.angle_deg)
    # per-image exposure so images are not copies of one tone
    mean = model.mean + tex_rng.normal(0.0, 0.03)
    gain = model.gain * tex_rng.uniform(0.85, 1.15)

    def retexture(rng: np.random.Generator, factor: float) -> np.ndarray:
        return texture_fn(rng, image_size, model.scale * factor, model.angle_deg).image

    field = texture.image
    if deviation and not defective:
        field = deviate(deviation_rng, field, retexture)
    clean = _to_grey(field, mean, gain)
    if not defective:
        return Sample(clean, clean, None, None)
    drawn, ellipse = apply_defect(
        defect_rng, DEFECTS[model.defect], texture, contrast * model.defect_contrast,
        model.defect_size, retexture,
    )
    return Sample(_to_grey(drawn, mean, gain), clean, ellipse.mask(image_size), ellipse)


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a single-channel PNG."""
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _label_row(row: int, plan: ImagePlan) -> str:
    """One Labels.txt row, DAGM style."""
    name = f"{plan.number:04d}.PNG"
    if plan.defective:
        return f"{row}\t1\t{name}\t0\t{plan.number:04d}_label.PNG\n"
    return f"{row}\t0\t{name}\t0\t0\n"


def _render_files(
    folder: Path, spec: SyntheticSpec, problem: int, split: str, plans: list[ImagePlan]
) -> int:
    """Render `plans` into a split folder (masks into its Label/); return the image count."""
    for plan in plans:
        sample = render_sample(
            problem, spec.image_size, spec.seed, SPLIT_IDS[split], plan.number,
            plan.defective, plan.deviation, spec.contrast,
        )
        _save_png(folder / f"{plan.number:04d}.PNG", sample.image)
        if sample.mask is not None:
            _save_png(folder / "Label" / f"{plan.number:04d}_label.PNG", sample.mask)
    return len(plans)


def _write_labels(folder: Path, problem: int, plans: list[ImagePlan]) -> None:
    """Create the split folder and its Label/Labels.txt."""
    (folder / "Label").mkdir(parents=True)
    rows = [f"{problem}\n"] + [_label_row(row, plan) for row, plan in enumerate(plans, start=1)]
    (folder / "Label" / "Labels.txt").write_text("".join(rows), encoding="utf-8", newline="\n")


def spec_record(spec: SyntheticSpec) -> dict[str, object]:
    """The JSON content that identifies a generated tree."""
    record: dict[str, object] = {"generator_version": GENERATOR_VERSION}
    record.update(asdict(spec))
    record["problems"] = list(spec.problems)
    return record


def read_spec(root: str | Path) -> SyntheticSpec | None:
    """The spec of a complete synthetic tree at `root`; None when there is none or it is stale."""
    path = Path(root) / SPEC_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.pop("generator_version", None) != GENERATOR_VERSION:
        return None
    try:
        return SyntheticSpec(**record)
    except TypeError:
        return None


def _default_workers(spec: SyntheticSpec) -> int:
    """Processes worth starting: one for small trees, else up to the usable cores (at most 8)."""
    if multiprocessing.current_process().daemon:  # pool workers may not have children
        return 1
    pixels = len(spec.problems) * (spec.n_train + spec.n_test) * spec.image_size**2
    if pixels < _PARALLEL_MIN_PIXELS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 8))


_Job = tuple[Path, SyntheticSpec, int, str, list[ImagePlan]]


def _prepare_splits(folder: Path, spec: SyntheticSpec) -> list[_Job]:
    """Create every split folder with its Labels.txt; return the rendering jobs, in chunks."""
    jobs: list[_Job] = []
    for problem in spec.problems:
        for split in ("Train", "Test"):
            plans = plan_split(spec, problem, split)
            split_dir = folder / f"Class{problem}" / split
            _write_labels(split_dir, problem, plans)
            for start in range(0, len(plans), _CHUNK):
                jobs.append((split_dir, spec, problem, split, plans[start : start + _CHUNK]))
    return jobs


def _run_jobs(jobs: list[_Job], workers: int, bar: tqdm) -> None:
    """Render all jobs, in this process or in `workers` spawned ones."""
    if workers <= 1:
        for job in jobs:
            bar.update(_render_files(*job))
        return
    # spawn, not fork: the caller may hold torch threads or CUDA state
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_render_files, *job) for job in jobs]
        try:
            for done in as_completed(futures):
                bar.update(done.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the temp tree is discarded anyway
            raise


def _write_problems(folder: Path, spec: SyntheticSpec, workers: int) -> None:
    """Write every problem and split of `spec` into `folder` (no spec file)."""
    jobs = _prepare_splits(folder, spec)
    total = len(spec.problems) * (spec.n_train + spec.n_test)
    with tqdm(total=total, desc="synthetic DAGM", unit="img", disable=None, leave=False) as bar:
        _run_jobs(jobs, workers, bar)


def _write_spec(root: Path, spec: SyntheticSpec) -> None:
    """Write the spec file atomically: readers see the old or the new one, never a partial one."""
    write_text(root / SPEC_FILE, json.dumps(spec_record(spec), indent=2) + "\n")


def _check_replaceable(root: Path) -> None:
    """Refuse to replace a non-empty folder that is not a synthetic tree (e.g. the real DAGM)."""
    if root.exists() and not (root / SPEC_FILE).exists():
        if not root.is_dir() or any(root.iterdir()):
            raise DatasetError(
                f"{root} exists and is not a synthetic DAGM tree (no {SPEC_FILE}); "
                "refusing to overwrite it: choose another path or remove it"
            )


def _lock(root: Path) -> FileLock:
    """The lock that makes every check-then-generate-then-move on `root` one critical section.

    It lies beside `root`, not in it: the tree itself is renamed away when it is replaced.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(root.parent / f".{root.name}.lock")


def _build_beside(root: Path, spec: SyntheticSpec, workers: int | None) -> Path:
    """Render `spec`'s problems into a new temp folder beside `root` (same file system, so renames are atomic)."""
    built = temp_dir(root.parent, prefix=f".{root.name}.", suffix=".tmp")  # a plain mkdir's permissions: it becomes the tree
    try:
        _write_problems(built, spec, _default_workers(spec) if workers is None else workers)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return built


def _replace_tree(root: Path, spec: SyntheticSpec, workers: int | None) -> None:
    """Generate `spec` beside `root` and swap it in; the old tree is renamed away first, then deleted."""
    built = _build_beside(root, spec, workers)
    old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        _write_spec(built, spec)
        if root.exists():
            os.rename(root, old)
        try:
            os.rename(built, root)
        except OSError:
            if old.exists():
                os.rename(old, root)  # put the previous tree back rather than lose it
            raise
    finally:
        shutil.rmtree(built, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _extend_tree(root: Path, on_disk: SyntheticSpec, missing: list[int], workers: int | None) -> None:
    """Add the `missing` problems to the tree at `root` in place, leaving its other problems' files untouched.

    Jobs reading those problems meanwhile are not disturbed; the spec file, written last, lists the union.
    """
    built = _build_beside(root, replace(on_disk, problems=tuple(missing)), workers)
    try:
        for problem in missing:
            target = root / f"Class{problem}"
            if target.exists():  # left by an extension that died before its spec file: no spec lists it
                shutil.rmtree(target)
            os.rename(built / target.name, target)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    _write_spec(root, replace(on_disk, problems=tuple(sorted({*on_disk.problems, *missing}))))


def generate_synthetic_dagm(
    root: str | Path, spec: SyntheticSpec, *, workers: int | None = None
) -> Path:
    """Generate (or reuse, when `root` holds an equal spec) a synthetic DAGM tree at `root`.

    `workers` processes render in parallel (None: chosen from the tree size and usable cores);
    the output does not depend on it. Concurrent calls on one root take turns (a file lock).
    """
    validate_spec(spec)
    root = Path(root)
    with _lock(root):
        if read_spec(root) != spec:
            _check_replaceable(root)
            _replace_tree(root, spec, workers)
    return root


def ensure_synthetic_dagm(
    root: str | Path, spec: SyntheticSpec, *, workers: int | None = None
) -> Path:
    """A synthetic tree at `root` that holds at least `spec`'s problems, generated with `spec`'s settings.

    A tree with equal settings is reused when it holds every problem, else extended in place with the
    missing ones (problems are generated independently, so the result equals a fresh tree of the union);
    a tree with other settings is replaced. Concurrent calls on one root take turns (a file lock).
    """
    validate_spec(spec)
    root = Path(root)
    with _lock(root):
        on_disk = read_spec(root)
        if on_disk is None or replace(on_disk, problems=spec.problems) != spec:
            _check_replaceable(root)
            _replace_tree(root, spec, workers)
        elif missing := sorted(set(spec.problems) - set(on_disk.problems)):
            _extend_tree(root, on_disk, missing, workers)
    return root
