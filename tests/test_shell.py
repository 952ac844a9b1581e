"""The stage shell names Hydra's run folders after the stage without breaking Hydra's own command line."""

from __future__ import annotations

import pytest
from hydra._internal.utils import get_args_parser

from conftest import run_cli
from defectcam.stages.shell import with_job_name

USER_ARGS = [
    [],
    ["-m"],
    ["a=1", "b=2", "-m"],
    ["-m", "a=1"],
    ["--cfg", "job"],
    ["a=1", "--cfg", "job", "--resolve"],
    ["--cfg", "hydra", "a=1"],
    ["--info"],
    ["--info", "-m"],
    ["--info", "defaults", "a=1"],
    ["-cn", "config", "a=1", "--multirun"],
    ["a=1", "--help"],
]


@pytest.mark.parametrize("args", USER_ARGS, ids=lambda args: " ".join(args) or "none")
def test_hydras_parser_reads_the_users_arguments_and_the_job_name(args: list[str]) -> None:
    """Oracle: Hydra's own parser. With the name added it reads what it reads without it, plus the name."""
    parser = get_args_parser()
    before = vars(parser.parse_args(args))
    after = vars(parser.parse_args(with_job_name(args, "localize")))
    assert after.pop("overrides") == ["hydra.job.name=localize", *before.pop("overrides")]
    assert after == before


def test_a_job_name_the_user_gives_is_kept() -> None:
    assert with_job_name(["hydra.job.name=mine", "-m"], "localize") == ["hydra.job.name=mine", "-m"]


def test_a_flag_after_the_overrides_works_from_the_console_script() -> None:
    """Appending the name after `--cfg job` once gave `unrecognized arguments: hydra.job.name=train`."""
    result = run_cli("train", "data.problems=[1]", "trainer.max_epochs=3", "--cfg", "job")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max_epochs: 3" in result.stdout
