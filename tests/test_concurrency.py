"""Concurrent defectcam-data jobs (real processes) on one synthetic root or one output folder take turns.

Each job is defectcam-data's own `main()` in a fresh interpreter, with two test hooks: a barrier that
holds every job until all have arrived (so they really start the critical part together), and a short
sleep inside the critical part (so, without the lock, the jobs' check-then-write windows overlap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from dagm_tree import make_tree
from defectcam.data.dagm import index_dagm
from defectcam.data.synthetic import read_spec

JOB = """
import os, sys, time
from pathlib import Path
import defectcam.data.prepare as prepare
import defectcam.data.synthetic as synthetic
import defectcam.stages.data as stage

def at_barrier(real):
    def wrapper(*args, **kwargs):
        folder = Path(os.environ["RACE_BARRIER"])
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(list(folder.iterdir())) < int(os.environ["RACE_JOBS"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return real(*args, **kwargs)
    return wrapper

def slow(real):
    def wrapper(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)
    return wrapper

def logged(real):
    def wrapper(*args, **kwargs):
        with open(os.environ["RACE_LOG"], "a") as log:
            log.write(f"decode {os.getpid()}\\n")
        return real(*args, **kwargs)
    return wrapper

if os.environ["RACE_AT"] == "synthetic":  # before the check of the synthetic tree; generating is slow
    synthetic.validate_spec = at_barrier(synthetic.validate_spec)
    synthetic._prepare_splits = slow(synthetic._prepare_splits)
else:  # before the check of split.csv; splitting is slow
    stage.index_dagm = at_barrier(stage.index_dagm)
    prepare.make_split = slow(prepare.make_split)
prepare._decode_into = logged(prepare._decode_into)
sys.argv = ["defectcam-data", *sys.argv[1:]]
stage.main()
"""


def run_jobs(tmp_path: Path, race_at: str, jobs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every job (a list of defectcam-data arguments) at once; wait for all of them."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DEFECTCAM_TRACEBACK")}
    env.update(RACE_BARRIER=str(barrier), RACE_JOBS=str(len(jobs)), RACE_AT=race_at, RACE_LOG=str(tmp_path / "decodes.log"))
    procs = [
        subprocess.Popen([sys.executable, "-c", JOB, *args, f"hydra.run.dir={tmp_path / f'hydra_{i}'}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for i, args in enumerate(jobs)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def decodes(tmp_path: Path) -> int:
    """How many times a job decoded a problem into its cache."""
    log = tmp_path / "decodes.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_jobs_generating_other_problems_into_one_synthetic_root(tmp_path: Path) -> None:
    root, out = tmp_path / "synthetic", tmp_path / "out"
    common = [f"data.root={root}", f"paths.output_dir={out}", "data.synthetic.image_size=32", "data.image_size=32",
              "data.synthetic.n_train=20", "data.synthetic.n_test=12"]
    results = run_jobs(tmp_path, "synthetic", [[*common, "data.problems=[1]"], [*common, "data.problems=[2]"]])
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    # One valid tree holding both problems, nothing left beside it but its lock file.
    assert read_spec(root).problems == (1, 2)
    assert set(index_dagm(root)["problem"]) == {1, 2}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".synthetic.lock"]
    # Both jobs' problems are prepared and summarized (the summary is merged, not overwritten).
    assert (out / "problem_1" / "split.csv").is_file() and (out / "problem_2" / "split.csv").is_file()
    assert set(json.loads((out / "data_summary.json").read_text())) == {"problem_1", "problem_2"}


def test_jobs_preparing_one_output_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "DAGM", problems=(1,))
    common = ["data=dagm", f"data.root={root}", "data.problems=[1]", "data.image_size=32", f"paths.output_dir={tmp_path / 'out'}"]
    results = run_jobs(tmp_path, "split", [[*common, f"data.split_seed={seed}"] for seed in (0, 1)])
    # One job splits and caches; the other then finds a split made with other settings and is refused,
    # rather than both writing split.csv and the cache and one of them going on with the other's files.
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr[-2000:] for r in results]
    loser = next(r for r in results if r.returncode == 2)
    assert "split with other settings (seed was" in loser.stderr
    assert decodes(tmp_path) == 1
