"""The suite's forked script runs (tests/cli_runner.py, tests/cli_server.py) report what a fresh process reports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli_runner
from conftest import run_cli, run_script
from test_startup import STAGES

# Ends in each way a process can end; prints what it was given and writes from a late thread and at exit.
PROBE = """\
import atexit, os, subprocess, sys, threading, time
from pathlib import Path

mode, folder = sys.argv[1], Path(sys.argv[2])
print("mode", mode, "argv[0]", sys.argv[0], "cwd", os.getcwd(), "first on sys.path", sys.path[0] == str(Path(__file__).parent))
print("torch imported before the script:", "torch" in sys.modules)
print("probe variable", os.environ.get("DEFECTCAM_PROBE"))
import numpy
print("draw", numpy.random.random())  # the global generator, seeded at import: a fork would copy the server's
sys.stderr.write("not UTF-8: \\udcff\\n")
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: (time.sleep(0.3), (folder / f"{mode}.thread").write_text("done"))).start()
if mode == "sleep":
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"])
    (folder / "grandchild").write_text(str(grandchild.pid))
    time.sleep(20)
    (folder / "woke").write_text("not killed at its timeout")
if mode == "raise":
    raise ValueError("an uncaught error")
if mode == "exit-text":
    sys.exit("stopped with a message")
if mode == "exit-3":
    sys.exit(3)
if mode == "exit-minus-1":
    sys.exit(-1)
if mode == "interrupt":
    raise KeyboardInterrupt
"""


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    return script


def comparable(stdout: str) -> list[str]:
    """The probe's output but the lines that must differ between a forked and a fresh run."""
    return [line for line in stdout.splitlines() if not line.startswith(("torch imported before the script", "draw"))]


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed and not yet reaped by its new parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def forked_run(run: subprocess.CompletedProcess[str], before: int | None) -> bool:
    return cli_runner.last_pid is not None and cli_runner.last_pid != before and "imported before the script: True" in run.stdout


@pytest.mark.parametrize("mode", ["exit-0", "exit-3", "exit-minus-1", "exit-text", "raise", "interrupt"])
def test_a_forked_script_ends_as_a_fresh_one(probe: Path, tmp_path: Path, mode: str) -> None:
    (tmp_path / "forked").mkdir()
    (tmp_path / "fresh").mkdir()
    before = cli_runner.last_pid
    forked = run_script(probe, mode, str(tmp_path / "forked"))
    assert forked_run(forked, before)
    fresh = subprocess.run([sys.executable, str(probe), mode, str(tmp_path / "fresh")], capture_output=True, text=True,
                           timeout=120)
    expected = {"exit-0": 0, "exit-3": 3, "exit-minus-1": 255, "exit-text": 1, "raise": 1, "interrupt": -2}[mode]
    assert forked.returncode == fresh.returncode == expected
    assert "torch imported before the script: False" in fresh.stdout
    assert comparable(forked.stdout) == comparable(fresh.stdout)
    assert "atexit ran" in forked.stdout
    # the same last line (the message, or the exception), the same surrogate escaped; tracebacks differ in runpy's frames
    assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    assert forked.stderr.splitlines()[0] == fresh.stderr.splitlines()[0] == "not UTF-8: \\udcff"
    # the interpreter waits for non-daemon threads before it exits; so does a forked run
    assert (tmp_path / "forked" / f"{mode}.thread").read_text() == (tmp_path / "fresh" / f"{mode}.thread").read_text()


@pytest.mark.parametrize("args", [("localize.methods=[bogus]",), ("--cfg", "job", "--package", "localize")],
                         ids=["one-line error", "printed config"])
def test_a_forked_stage_reports_what_a_fresh_stage_reports(args: tuple[str, ...]) -> None:
    before = cli_runner.last_pid
    forked = run_cli("localize", *args)
    assert cli_runner.last_pid != before
    fresh = run_cli("localize", *args, fresh=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.stdout or forked.stderr


def test_forked_runs_draw_their_own_random_numbers(probe: Path, tmp_path: Path) -> None:
    runs = [run_script(probe, "exit-0", str(tmp_path)).stdout for _ in range(2)]
    assert all("torch imported before the script: True" in run for run in runs)  # both forked
    draws = [[line for line in run.splitlines() if line.startswith("draw")] for run in runs]
    assert len(draws[0]) == 1 and draws[0] != draws[1]


def test_a_forked_run_sees_its_own_environment(probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFECTCAM_PROBE", "given to the run")
    seen = run_script(probe, "exit-0", str(tmp_path))
    assert "imported before the script: True" in seen.stdout and "probe variable given to the run" in seen.stdout
    monkeypatch.delenv("DEFECTCAM_PROBE")
    assert "probe variable None" in run_script(probe, "exit-0", str(tmp_path)).stdout
    stage = run_cli("data", "+probe=${oc.env:DEFECTCAM_PROBE}", "--cfg", "job", "--package", "probe", "--resolve",
                    env={"DEFECTCAM_PROBE": "given to the stage"})
    assert stage.returncode == 0 and "given to the stage" in stage.stdout, stage.stderr


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "PYTHONHASHSEED", "TMPDIR", "OMP_NUM_THREADS unset"])
def test_a_run_that_changes_an_import_time_variable_starts_afresh(probe: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    if variable.endswith(" unset"):  # conftest sets it for the whole suite: taking it away is a change too
        monkeypatch.delenv(variable.split()[0])
    else:
        monkeypatch.setenv(variable, str(tmp_path) if variable == "TMPDIR" else "2")
    run = run_script(probe, "exit-0", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "torch imported before the script: False" in run.stdout  # its own interpreter, not the server's imports


def test_a_run_past_its_timeout_is_killed_and_the_next_run_still_works(probe: Path, tmp_path: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(probe, "sleep", str(tmp_path), timeout=1)
    assert not alive(cli_runner.last_pid) and not (tmp_path / "woke").exists()  # killed, not waited for
    assert (tmp_path / "grandchild").is_file(), "the run was stopped before it started its grandchild"
    grandchild = int((tmp_path / "grandchild").read_text())
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:  # SIGKILL lands at once; its reaping need not
        time.sleep(0.05)
    assert not alive(grandchild)  # what the run started went with it: its whole process group was killed
    after = run_cli("localize", "localize.methods=[bogus]")
    assert after.returncode == 2 and "bogus" in after.stderr


def test_what_the_libraries_set_themselves_keeps_runs_forked(probe: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Lightning, cv2 and scikit-learn set import-time variables when imported, in the test process as in the server:
    # read as a test's own change, they once sent every later run of a test process to a fresh interpreter, silently.
    # Here the test process imports whatever any stage imports, and its runs must still be forked.
    import importlib

    for module in ("defectcam.stages." + stage for stage in STAGES):
        importlib.import_module(module)
    for module in ("albumentations", "cv2", "sklearn.metrics", "matplotlib.pyplot", "onnxruntime",
                   "segmentation_models_pytorch", "torch.utils.tensorboard", "onnx"):
        importlib.import_module(module)
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and "KMP_INIT_AT_FORK" in os.environ
    assert "torch imported before the script: True" in run_script(probe, "exit-0", str(tmp_path)).stdout
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "0")  # set otherwise than the import sets it: a fresh run
    assert "torch imported before the script: False" in run_script(probe, "exit-0", str(tmp_path)).stdout
