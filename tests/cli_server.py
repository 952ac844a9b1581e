"""The server behind tests/cli_runner.py: imports the heavy libraries once, then forks one child per run.

Started as a script by the client, one per test process. It reads one JSON request per line on stdin
({"argv", "env", "cwd", "stdout", "stderr", "timeout"}), forks, answers {"pid"} at once and {"returncode",
"timed_out"} when the child has ended or was killed at its timeout. Its first answer, once it has imported,
is {"preload_env"}: the variables the imports set. It ends when its stdin closes.

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
import runpy
import select
import signal
import sys
import threading
import traceback
from typing import Any

# What a stage's start-up spends its seconds on (torch alone 2-3 s on the project's 2-core CPU), and the libraries
# that set environment variables when imported (cv2: LD_LIBRARY_PATH; scikit-learn: KMP_*), which the test process
# imports too: their variables must not read as a test's own change (cli_runner.forkable).
PRELOAD = ("torch", "torchvision", "pytorch_lightning", "hydra", "pandas", "cv2", "sklearn")
_running: int | None = None  # the child being waited for, killed with the server (SIGTERM)


def run_child(request: dict[str, Any], preload_env: dict[str, str]) -> tuple[int, bool]:
    """One forked run: what `python <script> <args>` would do in its own process. Returns its exit code, and
    whether it ended by an uncaught KeyboardInterrupt (which the interpreter turns into SIGINT)."""
    os.setpgid(0, 0)  # a group of its own (the server sets it too), so that a timeout kills what it started
    # The interpreter's own choices for this locale, as the server got them: stdout's error handler depends on it.
    encoding, out_errors = sys.__stdout__.encoding, sys.__stdout__.errors
    for fd, key in ((1, "stdout"), (2, "stderr")):
        file = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(file, fd)
        os.close(file)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding=encoding, errors=out_errors)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding=encoding, errors="backslashreplace",
                                  line_buffering=True)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(preload_env)  # what the preloaded libraries set at import (a fresh run's imports set it too)
    os.chdir(request["cwd"])
    if "numpy" in sys.modules:  # a fresh process draws its own seed (Python's random reseeds itself at a fork)
        sys.modules["numpy"].random.seed()
    # The script's path as argv[0], as a shell gives it (Lightning's DDP starts its other ranks from it); the console
    # scripts are run through their own wrappers, which call sys.exit(main()).
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    code, interrupted = 0, False
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0  # exit() keeps its low 8 bits, in both: sys.exit(-1) is 255
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - an uncaught exception ends the process as the interpreter would
        sys.excepthook(*sys.exc_info())
        code, interrupted = 1, isinstance(sys.exc_info()[1], KeyboardInterrupt)
    threading._shutdown()  # type: ignore[attr-defined]  # the interpreter waits for non-daemon threads, then atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream.flush()
    return code, interrupted


def forked(request: dict[str, Any], preload_env: dict[str, str]) -> None:
    """The child's whole life after the fork: never returns into the server's loop."""
    code = 1
    try:
        code, interrupted = run_child(request, preload_env)
        if interrupted:  # as the interpreter ends on an uncaught KeyboardInterrupt: by the signal itself
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001 - a failure before the script ran (a bad folder): said, not silent
        traceback.print_exc()
    finally:
        os._exit(code)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(pid: int, timeout: float | None) -> tuple[int, bool]:
    """The child's exit code once it ends, killed with its process group after `timeout` seconds; and whether it was."""
    handle = os.pidfd_open(pid)
    try:
        timed_out = not select.select([handle], [], [], timeout)[0]
    finally:
        os.close(handle)
    if timed_out:
        kill_group(pid)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), timed_out


def stop(signum: int, frame: object) -> None:
    """SIGTERM from the client (its test was interrupted), or the terminal's Ctrl-C (the server shares pytest's
    process group, its child does not): the running child and its group go with the server."""
    if _running is not None:
        kill_group(_running)
    os._exit(1)


def serve() -> None:
    global _running
    # Answers go out on a copy of stdout; fd 1 itself becomes stderr, so nothing printed while importing can
    # break the protocol.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    started = dict(os.environ)
    for module in PRELOAD:
        importlib.import_module(module)
    sys.stdout.flush()
    preload_env = {name: value for name, value in os.environ.items() if started.get(name) != value}
    answers.write(json.dumps({"preload_env": preload_env}) + "\n")  # ready: and what the imports set
    answers.flush()
    stopping = {signal.SIGTERM, signal.SIGINT}
    for signum in stopping:
        signal.signal(signum, stop)
    for line in sys.stdin:
        request = json.loads(line)
        signal.pthread_sigmask(signal.SIG_BLOCK, stopping)  # no stop between the fork and knowing whom to kill
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
            answers.close()
            forked(request, preload_env)
        _running = pid
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
        try:
            os.setpgid(pid, pid)  # also here, so that no kill can come before the child's own setpgid
        except (PermissionError, ProcessLookupError):
            pass  # the child has already set it, or has already ended
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        returncode, timed_out = wait_for(pid, request["timeout"])
        _running = None
        answers.write(json.dumps({"returncode": returncode, "timed_out": timed_out}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
