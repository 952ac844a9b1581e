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
from collections import Counter
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("cli_server.py")
# Read when the interpreter starts or a preloaded library is imported (thread pools, allocators, locale, temp
# folder): a run that changes one needs an interpreter of its own. Prefixes; a few match more than they need.
IMPORT_TIME_ENV = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "GOTO_", "CUDA_", "TORCH_", "PYTORCH_",
                   "LD_", "MALLOC_", "GLIBC_TUNABLES", "TMP", "TEMP", "MPLBACKEND", "MPLCONFIGDIR", "LANG",
                   "LC_", "TZ")
# The servers' environment: the test process's as it was when the suite began (conftest has set its own variables),
# not as the test that happens to start a server has changed it.
BASE_ENV = dict(os.environ)


class Server:
    """The client's end of one server process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1, env=BASE_ENV)
        # What its imports set (Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK): its runs have it, as fresh ones would.
        self.preload_env: dict[str, str] = self.answer()["preload_env"]

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
        """End the server and the run it is waiting for (SIGTERM: it kills the run's process group first)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
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
    """Whether a run with environment `env` can share the server's imports: no import-time variable differs from
    the suite's start, except as the server's imports set it (the test process may or may not have imported them)."""
    preload_env = server().preload_env
    return all(env.get(name) in (BASE_ENV.get(name), preload_env.get(name, BASE_ENV.get(name)))
               for name in set(BASE_ENV) | set(env) if name.startswith(IMPORT_TIME_ENV))


def run_forked(script: Path, args: list[str], env: dict[str, str], cwd: Path, timeout: float | None) -> subprocess.CompletedProcess[str]:
    """`python script *args` (a console script, or a Python file) in a process forked from the server, with
    environment `env` in folder `cwd`, reported as subprocess.run would report it."""
    global _server, last_pid
    command = [str(script), *args]
    warm = server()
    with tempfile.TemporaryDirectory(prefix="cli_") as folder:
        out_path, err_path = Path(folder) / "stdout", Path(folder) / "stderr"
        pid = None
        try:
            warm.ask({"argv": command, "env": env, "cwd": str(cwd), "stdout": str(out_path), "stderr": str(err_path),
                      "timeout": timeout})
            pid = last_pid = warm.answer()["pid"]
            done = warm.answer()
        except BaseException:  # interrupted (Ctrl-C, pytest-timeout): as subprocess.run does, the run is killed
            warm.stop()  # with the server, which kills the run it waits for (also one whose pid had not come yet)
            _server = None
            if pid is not None:  # and if the server had ended first (Ctrl-C reaches it too), by the client
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
        if done["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, done["returncode"], read_text(out_path), read_text(err_path))


# How `run` ran its scripts in this test process (the suite's summary adds up the workers'): a fallback to fresh
# interpreters is correct but slow, and once happened silently for most of the suite.
RUN_COUNTS: Counter[str] = Counter()


def run(script: Path, args: list[str], env: dict[str, str], cwd: Path, timeout: float | None,
        fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """`script` (a console script, or a Python file run by this interpreter) with `args`, environment `env`, in
    folder `cwd`: forked from the server, or started afresh when `fresh` or when `env` is not forkable."""
    if not fresh and forkable(env):
        RUN_COUNTS["forked"] += 1
        return run_forked(script, args, env, cwd, timeout)
    RUN_COUNTS["started afresh by choice" if fresh else "started afresh for their environment"] += 1
    command = [sys.executable, str(script)] if script.suffix == ".py" else [str(script)]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
