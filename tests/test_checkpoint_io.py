"""Checkpoint files appear whole or not at all, and an asynchronous write holds the values of the moment it was asked for."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_overrides
from defectcam.errors import ConfigError, ModelError
from defectcam.io import write_json
from defectcam.models.checkpoint_io import AtomicCheckpointIO, BackgroundCheckpointIO, checkpoint_io, use_async_checkpoints


def unpicklable() -> dict[str, object]:
    return {"callback": lambda: None}  # torch.save cannot pickle a lambda: the write fails half way


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"w": torch.arange(5)}, path)
    with pytest.raises(Exception, match="lambda"):
        writer.save_checkpoint(unpicklable(), path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(5))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left behind



def test_a_file_left_by_a_kill_is_replaced_by_the_next_save(tmp_path: Path) -> None:
    (tmp_path / ".last.ckpt.tmp").write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_outputs_get_the_usual_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "best.ckpt")
    write_json(tmp_path / "summary.json", {"a": 1})
    for name in ("best.ckpt", "summary.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_an_unwritable_place_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(ModelError, match=r"checkpoints/last.ckpt: cannot write the checkpoint \("):
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "checkpoints" / "last.ckpt")


def test_the_background_writer_holds_at_most_two_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk_ready, save = threading.Event(), torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (disk_ready.wait(10), save(obj, f)))  # a slow disk
    writer = BackgroundCheckpointIO()
    writer.save_checkpoint({"w": torch.zeros(3)}, tmp_path / "best.ckpt")
    writer.save_checkpoint({"w": torch.ones(3)}, tmp_path / "last.ckpt")
    third = threading.Thread(target=writer.save_checkpoint, args=({"w": torch.full((3,), 2.0)}, tmp_path / "last.ckpt"))
    third.start()
    third.join(0.5)
    assert third.is_alive()  # two copies are held: the third save waits for the disk
    disk_ready.set()
    third.join(10)
    writer.teardown()
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["w"], torch.full((3,), 2.0))  # written in order


def test_async_writes_hold_the_values_of_save_time(tmp_path: Path) -> None:
    writer = checkpoint_io(asynchronous=True)
    weights = torch.zeros(200_000)
    for step in range(3):
        weights.fill_(step)  # an optimizer step, in place, while earlier files may still be written
        writer.save_checkpoint({"w": weights, "step": step}, tmp_path / f"{step}.ckpt")
    weights.fill_(99.0)
    writer.teardown()  # waits for the writes, as the trainer's teardown does
    for step in range(3):
        saved = torch.load(tmp_path / f"{step}.ckpt", weights_only=True)
        assert saved["step"] == step and bool((saved["w"] == step).all())


def test_an_async_write_error_is_raised_at_teardown(tmp_path: Path) -> None:
    writer = checkpoint_io(asynchronous=True)
    writer.save_checkpoint(unpicklable(), tmp_path / "last.ckpt")
    with pytest.raises(Exception, match="lambda"):
        writer.teardown()
    assert list(tmp_path.iterdir()) == []


def test_unknown_async_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.async_checkpoints: 'later' is not one of auto, true, false"):
        use_async_checkpoints("later", "cpu")


SETTINGS = ("false", "true")


def test_async_training_writes_the_checkpoints_of_sync_training(tmp_path: Path) -> None:
    saved = {}
    for setting in SETTINGS:
        out = tmp_path / f"async_{setting}"
        overrides = [*tiny_overrides(tmp_path / "syn", out, "[1]"), "trainer.max_epochs=2", f"train.async_checkpoints={setting}"]
        result = run_cli("train", *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
        folder = out / "problem_1" / "checkpoints"
        assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
        saved[setting] = {name: torch.load(folder / name, map_location="cpu", weights_only=False) for name in ("best.ckpt", "last.ckpt")}
    for name in ("best.ckpt", "last.ckpt"):
        sync, background = saved["false"][name], saved["true"][name]
        assert sync["epoch"] == background["epoch"] and sync["state_dict"].keys() == background["state_dict"].keys()
        for key, value in sync["state_dict"].items():
            assert torch.equal(value, background["state_dict"][key]), (name, key)
    assert saved["true"]["last.ckpt"]["optimizer_states"][0]["state"].keys() == saved["false"]["last.ckpt"]["optimizer_states"][0]["state"].keys()
