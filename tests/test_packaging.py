"""A built wheel (not the editable install) carries the configs: its stages compose them from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
MARKER = "installed_copy_marker: 1"


def pip(*args: str, cwd: Path) -> None:
    """Run pip offline; fail with its output."""
    result = subprocess.run([*PIP, *args, "--no-index", "--no-deps"], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, site): the project built as a wheel from a clean copy, installed into a bare target folder."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip("wheel", str(source), "--no-build-isolation", "-w", str(base / "dist"), cwd=base)
    (wheel,) = (base / "dist").glob("defectcam-*.whl")
    pip("install", "--target", str(base / "site"), str(wheel), cwd=base)
    return wheel, base / "site"


def test_wheel_holds_every_package_and_config(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {init.relative_to(REPO / "src").as_posix() for init in (REPO / "src" / "defectcam").rglob("__init__.py")}
    assert packages <= names, f"packages missing from pyproject's list: {sorted(packages - names)}"
    configs = {f"defectcam/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert configs and configs <= names, sorted(configs - names)


def test_installed_stage_composes_its_own_configs_from_any_folder(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, site = installed
    # Mark the installed copy: the composed config shows the marker only if it was read from there.
    config = site / "defectcam" / "conf" / "config.yaml"
    config.write_text(config.read_text() + f"\n{MARKER}\n")
    assert MARKER not in (REPO / "conf" / "config.yaml").read_text()
    env = {k: v for k, v in os.environ.items() if k not in ("DEFECTCAM_CONF_DIR", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = str(site)  # first on sys.path: before the editable install of the checkout
    script = ("import sys, defectcam; from defectcam.stages.data import main; print('module:', defectcam.__file__); "
              "sys.argv = ['defectcam-data', '--cfg', 'job', 'experiment=paper']; main()")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"module: {site / 'defectcam' / '__init__.py'}" in result.stdout
    assert MARKER in result.stdout and "experiment_name: paper" in result.stdout
