"""The stage shell: a Hydra entry point that turns user errors into one line on stderr and exit code 2."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from defectcam.errors import DefectcamError

# The configs ship inside the package (pyproject.toml maps the top-level conf/ to `defectcam.conf`), so an
# installed wheel finds them from any folder. DEFECTCAM_CONF_DIR points the stages at another folder instead.
_CONF_OVERRIDE = os.environ.get("DEFECTCAM_CONF_DIR")
CONFIG_PATH = str(Path(_CONF_OVERRIDE).resolve()) if _CONF_OVERRIDE else "pkg://defectcam.conf"
EXIT_USER_ERROR = 2
_FULL_ERROR = "HYDRA_FULL_ERROR"
_TRACEBACK = "DEFECTCAM_TRACEBACK"


# Known, harmless messages of the pinned libraries that would bury the stage's own output.
_QUIET = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*is smaller than the logging interval.*",
    r".*does not have many workers.*",
    r".*DataLoader will create \d+ worker processes in total.*",  # train.train_datamodule says why data.num_workers stays
    r".*all_gather is deprecated.*",
    r".*The given NumPy array is not writable.*",
    r".*module\(s\) in eval mode at the start of training.*",  # the fullres stage's frozen classifier, on purpose
)


def quiet_known_warnings() -> None:
    """Silence the library warnings listed in _QUIET and Lightning's start-up chatter (GPU/TPU lines, tips)."""
    for pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def stage_entry(name: str, task: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """Wrap `task(cfg)` as a console script: Hydra overrides and -m work, bad input exits 2 with one line."""

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
    def hydra_task(cfg: DictConfig) -> Any:
        quiet_known_warnings()
        try:
            return task(cfg)
        except DefectcamError as exc:
            if _user_wants_traceback():
                raise
            _fail(name, str(exc))

    def main() -> None:
        user_full_error = _user_wants_traceback()
        # Remember the user's choice (also for launcher worker processes), then let Hydra raise instead of
        # printing a multi-line report, so composition errors become one line too.
        os.environ[_TRACEBACK] = "1" if user_full_error else "0"
        os.environ[_FULL_ERROR] = "1"
        # Name Hydra's run folders after the stage (it would take this module's name).
        sys.argv[1:] = with_job_name(sys.argv[1:], name)
        try:
            hydra_task()
        except (hydra.errors.HydraException, OmegaConfBaseException) as exc:
            if user_full_error:
                raise
            _fail(name, "config error: " + fold_hydra_message(_message(exc)))
        finally:
            os.environ.pop(_TRACEBACK, None)
            if not user_full_error:
                os.environ.pop(_FULL_ERROR, None)

    return main


# Hydra's flags that take the next argument as their value (--info takes one only from its choices).
_VALUE_FLAGS = frozenset({"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                          "--config-dir", "-cd", "--experimental-rerun"})
_OPTIONAL_VALUE_FLAGS = {("--info", "-i"): frozenset({"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"})}


def with_job_name(args: list[str], name: str) -> list[str]:
    """The user's arguments with `hydra.job.name=<name>` among their overrides, unless they set it.

    Hydra's parser takes the overrides as one run of positional arguments: one appended after a flag
    (`... -m`, `... --cfg job`) would start a second run and be refused, so it goes before the first override."""
    if any(arg.startswith("hydra.job.name=") for arg in args):
        return list(args)
    position, index, bare_optional = len(args), 0, None
    while index < len(args):
        arg = args[index]
        if arg in _VALUE_FLAGS:
            index += 2
            continue
        choices = next((choices for flags, choices in _OPTIONAL_VALUE_FLAGS.items() if arg in flags), None)
        if choices is not None:
            has_value = index + 1 < len(args) and args[index + 1] in choices
            bare_optional = None if has_value else index
            index += 2 if has_value else 1
            continue
        if not arg.startswith("-"):
            position = index
            break
        bare_optional = None
        index += 1
    if bare_optional is not None and bare_optional == position - 1:
        position = bare_optional  # right after a bare `--info`, the name would be read as its value
    return [*args[:position], f"hydra.job.name={name}", *args[position:]]


def fold_hydra_message(message: str) -> str:
    """Hydra's multi-line messages folded into one line, without the config search path dump."""
    message = message.split("\nConfig search path", 1)[0]
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _message(exc: BaseException) -> str:
    """The exception's text, or its cause's when Hydra wraps an error without a message of its own."""
    while not str(exc).strip() and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _user_wants_traceback() -> bool:
    return os.environ.get(_TRACEBACK, os.environ.get(_FULL_ERROR, "")) == "1"


def _fail(name: str, message: str) -> None:
    logging.shutdown()
    print(f"defectcam-{name}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
