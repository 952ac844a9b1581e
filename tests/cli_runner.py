"""Script runs forked from a warm server (tests/cli_server.py) instead of started afresh: the client's side.

A stage's start-up (the interpreter, torch, Lightning, Hydra) took 3-8 s of the 2-core CPU per run, and the suite
runs about 80 console-script and Python-script runs. Each run here is still a process of its own, with its own
arguments, environment, working folder, stdin, stdout, stderr and exit code, so a test sees what a shell sees;
only the third-party imports are shared. A run whose environment differs from the server's in a variable that
is read at import is started afresh instead (`forkable`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("cli_server.py")
# Read when a library is imported (so the server has them already): a run that changes one needs its own interpreter.
IMPORT_TIME_ENV = ("PYTHON", "DEFECTCAM_CONF_DIR", "OMP_", "MKL_", "KMP_", "GOMP_", "CUDA_", "TORCH_", "PYTORCH_",
                   "TMPDIR", "TEMP", "TMP", "MPLBACKEND", "MPLCONFIGDIR", "LANG", "LC_", "TZ")


class Server:
    """The client's end of one server process, started with the environment it was given."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.process = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1, env=self.env)

    def ask(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI server ended (exit code {self.process.wait()}); its stderr is in the test's output")
        return json.loads(line)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


_server: Server | None = None
last_pid: int | None = None  # the last forked run's process id, for tests of this module


def server() -> Server:
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = Server()
    return _server


def forkable(env: dict[str, str]) -> bool:
    """Whether a run with environment `env` can share the server's imports: no import-time variable differs."""
    started = server().env
    return not any(started.get(name) != env.get(name)
                   for name in set(started) | set(env) if name.startswith(IMPORT_TIME_ENV))


def run_forked(script: Path, args: list[str], env: dict[str, str], cwd: Path, timeout: float | None) -> subprocess.CompletedProcess[str]:
    """`python script *args` (a console script, or a Python file) in a process forked from the server, with
    environment `env` in folder `cwd`, reported as subprocess.run would report it."""
    global _server, last_pid
    command = [str(script), *args]
    warm = server()
    with tempfile.TemporaryDirectory(prefix="cli_") as folder:
        out_path, err_path = Path(folder) / "stdout", Path(folder) / "stderr"
        warm.ask({"argv": command, "env": env, "cwd": str(cwd), "stdout": str(out_path), "stderr": str(err_path),
                  "timeout": timeout})
        pid = None
        try:
            pid = last_pid = warm.answer()["pid"]
            done = warm.answer()
        except BaseException:  # interrupted (Ctrl-C, pytest-timeout): as subprocess.run does, kill the run, then the server
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            warm.stop()
            _server = None
            raise
        if done["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, done["returncode"], read_text(out_path), read_text(err_path))


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
