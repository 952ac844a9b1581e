"""The server behind tests/cli_runner.py: imports the heavy libraries once, then forks one child per run.

Started as a script by the client, one per test process. It reads one JSON request per line on stdin
({"argv", "env", "cwd", "stdout", "stderr", "timeout"}), forks, answers {"pid"} at once and {"returncode",
"timed_out"} when the child has ended or was killed at its timeout. It ends when its stdin closes.

It imports only third-party libraries (PRELOAD), never defectcam: every run imports the project's own modules
itself, as a fresh process would. It runs no tensor code, so the children inherit no OpenMP thread pool for a
fork to break.
"""

from __future__ import annotations

import atexit
import importlib
import io
import json
import os
import random
import runpy
import select
import signal
import sys
import threading
import traceback
from typing import Any

# What a stage's start-up spends its seconds on (torch alone 2-3 s on the project's 2-core CPU).
PRELOAD = ("torch", "torchvision", "pytorch_lightning", "hydra", "pandas")


def run_child(request: dict[str, Any]) -> int:
    """One forked run: what `python <script> <args>` would do in its own process, returning its exit code."""
    os.setpgid(0, 0)  # a group of its own, so that a timeout kills what it started too
    for fd, key in ((1, "stdout"), (2, "stderr")):
        file = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(file, fd)
        os.close(file)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # The interpreter's own choices for a process whose output is a file: surrogates survive, stderr never fails.
    sys.stdin = open(0, closefd=False)
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding="utf-8", errors="surrogateescape")
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    random.seed()  # a fresh process draws its own seeds, not the server's
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    # The script's path as argv[0], as a shell gives it (Lightning's DDP starts its other ranks from it); the console
    # scripts are run through their own wrappers, which call sys.exit(main()).
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - an uncaught exception ends the process as the interpreter would
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # the interpreter waits for non-daemon threads, then atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream.flush()
    if code < 0:  # as the interpreter ends on an uncaught KeyboardInterrupt: by the signal itself
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def wait_for(pid: int, timeout: float | None) -> tuple[int, bool]:
    """The child's exit code once it ends, killed with its process group after `timeout` seconds; and whether it was."""
    handle = os.pidfd_open(pid)
    try:
        timed_out = not select.select([handle], [], [], timeout)[0]
    finally:
        os.close(handle)
    if timed_out:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), timed_out


def serve() -> None:
    # Answers go out on a copy of stdout; fd 1 itself becomes stderr, so nothing printed while importing can
    # break the protocol.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for module in PRELOAD:
        importlib.import_module(module)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                answers.close()
                code = run_child(request)
            finally:
                os._exit(code & 0xFF)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        returncode, timed_out = wait_for(pid, request["timeout"])
        answers.write(json.dumps({"returncode": returncode, "timed_out": timed_out}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
