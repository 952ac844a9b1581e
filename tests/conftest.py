"""Shared fixtures: tiny DAGM trees, composed configs, the CLI, and one tiny trained pipeline per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# One OpenMP thread per test process (and the CLI processes they start): the suite runs on two xdist
# workers, and two workers each spinning two OpenMP threads on two cores ran tensor code up to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cli_runner import RUN_COUNTS, run  # noqa: E402
from dagm_tree import make_tree  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
BIN = Path(sys.executable).parent


# The modules that hold the suite's longest tests (25 s or more on the project's 2-core CPU), longest first.
# They run first: on two xdist workers, a long test handed out last leaves the other worker idle until it ends.
LONGEST_FIRST = ("test_fullres_end_to_end.py", "test_stale_inputs.py", "test_train_resume_ddp.py", "test_seeds.py",
                 "test_export.py", "test_fullres_stage.py", "test_benchmarks.py", "test_checkpoint_io.py",
                 "test_pipeline.py", "test_predict.py", "test_export_gradients.py", "test_train_settings.py",
                 "test_training_recipe.py", "test_fullres_products.py", "test_data_cli.py", "test_names.py",
                 "test_bad_settings.py", "test_concurrency.py")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):  # an xdist worker: its counts travel to the controller
        session.config.workeroutput["script_runs"] = dict(RUN_COUNTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    RUN_COUNTS.update(getattr(node, "workeroutput", {}).get("script_runs", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RUN_COUNTS:
        terminalreporter.write_line("script runs: " + ", ".join(f"{n} {how}" for how, n in sorted(RUN_COUNTS.items())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its own order


def tiny_overrides(root: Path, out: Path, problems: str = "[1,2]") -> list[str]:
    """Overrides for a run on tiny synthetic data (32x32 images, 1 epoch, no progress bars)."""
    return [
        f"data.problems={problems}",
        f"data.root={root}",
        f"paths.output_dir={out}",
        "data.synthetic.image_size=32",
        "data.image_size=32",
        "data.synthetic.n_train=40",
        "data.synthetic.n_test=24",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "train.progress_bar=false",
        "evaluate.latency_images=4",
        "evaluate.warmup=1",
        "cam.figure_images=2",
        "localize.n_thresholds=21",
        "fullres.steps=4",
        "fullres.eval_every=2",
        "fullres.figure_images=2",
    ]


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """compose_cfg(*overrides) -> the composed config, as the stages see it."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


def run_cli(stage: str, *args: str, env: dict[str, str] | None = None, timeout: int = 600,
            fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a defectcam-<stage> console script in a process of its own; stdout and stderr captured as text.

    The process is forked from a server that has already imported the heavy libraries (cli_runner), unless `fresh`
    or the environment changes a variable that is read at import: then the console script itself is started."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DEFECTCAM_TRACEBACK")}
    full_env.update(env or {})
    return run(BIN / f"defectcam-{stage}", list(args), full_env, REPO, timeout, fresh)


def run_script(script: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run a Python script of the repository (a benchmark, a check) as `python script *args` would, in a process
    forked from the server that run_cli uses (or afresh, as run_cli decides); stdout and stderr captured as text."""
    return run(script, list(args), dict(os.environ), Path.cwd(), timeout)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-tensor tests, restored after it."""
    # Two spinning OpenMP threads on a busy 2-core machine run tiny ops ~10x slower than one.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def dagm_root(tmp_path: Path) -> Path:
    """A valid hand-made DAGM tree with problem 1 (20 Train + 20 Test images, 32x32)."""
    return make_tree(tmp_path / "DAGM", problems=(1,))


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test session, also across xdist workers: the first worker builds it under a
    file lock in the folder the workers share, the others wait and reuse it. Its users only read it."""
    shared = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above every worker's own
    base, failed = shared / name, shared / f"{name}.failed"
    with FileLock(shared / f"{name}.lock"):
        if failed.is_file():  # another worker's build failed: the same failure, without building again
            pytest.fail(f"building {name} failed in another worker: {failed.read_text()[-2000:]}")
        if not (base / "built").is_file():
            base.mkdir()
            try:
                build(base)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
            (base / "built").write_text("ok\n")
    return base


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One tiny end-to-end reproduce run (2 problems), shared by the tests that read its outputs (built once)."""

    def build(base: Path) -> None:
        # Started afresh: one run of every stage but predict and export on its own imports, which forked runs share.
        result = run_cli("reproduce", *tiny_overrides(base / "synthetic", base / "out"), fresh=True)
        assert result.returncode == 0, result.stderr[-3000:]

    base = built_once(tmp_path_factory, "pipeline", build)
    return {"out": base / "out", "overrides": tiny_overrides(base / "synthetic", base / "out")}


def private_copy(pipeline: dict[str, object], tmp_path: Path, name: str = "out", link: bool = False) -> tuple[Path, list[str]]:
    """Problem 1 of the tiny pipeline in a folder of its own, and the overrides that point at it. link=True: hard
    links, for callers whose stages only replace files (never rewrite one in place) and skip caches and figures."""
    out = tmp_path / name
    # ".*.tmp": an atomic write another worker's run of the shared pipeline has not renamed into place yet
    skipped = ("problem_2", "multirun", "hydra", "tensorboard", "last.ckpt", ".*.tmp", *(("cache", "figures") if link else ()))
    shutil.copytree(pipeline["out"], out, ignore=shutil.ignore_patterns(*skipped), copy_function=os.link if link else shutil.copy2)
    return out, copy_overrides(pipeline, out)


def middle_of_widest_gap(values: Sequence[float], min_width: float = 2e-3) -> float:
    """A threshold with values on both sides and none near it: the middle of the widest gap between the sorted values.

    The tiny pipeline's classifier and decoder train for one epoch or four steps, and which side of a recorded
    threshold their outputs fall on changes with the CPU's kernels. Tests that need both sides put the threshold here.
    `min_width`: how far apart the values around it must be, so that no value recomputed on another engine (or
    from a float16 cache's code) lands on the other side."""
    ordered = sorted(float(v) for v in values)
    width, middle = max((b - a, (a + b) / 2) for a, b in zip(ordered, ordered[1:]))
    assert width > min_width, f"no gap wider than {min_width} between {ordered}"
    return middle


def rewrite_json(path: Path, **changes: object) -> None:
    """Change keys of a JSON file as a new file: in a private_copy(link=True) the old one is the shared pipeline's."""
    data = json.loads(path.read_text())
    data.update(changes)
    path.unlink()
    path.write_text(json.dumps(data, indent=2))


def copy_overrides(pipeline: dict[str, object], out: Path) -> list[str]:
    """The tiny pipeline's overrides pointed at a copy of its problem 1 in `out`."""
    overrides = [o for o in pipeline["overrides"] if not o.startswith(("paths.output_dir=", "data.problems="))]
    return [*overrides, f"paths.output_dir={out}", "data.problems=[1]"]
