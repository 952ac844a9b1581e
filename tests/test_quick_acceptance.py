"""The quick experiment's acceptance run (slow: the full default experiment, ~10 minutes on 2 cores).

Deselected by default; run with `pytest -m slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, run_cli, run_script

pytestmark = pytest.mark.slow


def test_quick_reaches_accuracy_and_localizes(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    result = run_cli("reproduce", f"paths.output_dir={out}", f"data.root={tmp_path / 'synthetic'}", "train.progress_bar=false", timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    check = run_script(REPO / "scripts" / "check_quick.py", str(out))
    assert check.returncode == 0, check.stdout
