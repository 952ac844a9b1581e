"""Atomic file writes: a temp file (or folder) in the same folder, then os.replace, so no half-written output."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str], single_writer: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed.

    The temp name is unique per call, so concurrent writers of one file never share it. A file with a single
    writer (a checkpoint: rank 0, one thread) may ask for the fixed `.<name>.tmp` instead: a temp file left by
    a kill -9 is then overwritten by the next write rather than left beside the others (checkpoints: ~300 MB).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if single_writer:
        tmp = target.with_name(f".{target.name}.tmp")
    else:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes it owner-only; outputs get the usual permissions
        tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_dir(parent: str | os.PathLike[str], prefix: str, suffix: str = "") -> Path:
    """A new, uniquely named folder in `parent` with the permissions a plain mkdir gives (0o777 less the umask).

    tempfile.mkdtemp makes it owner-only (0o700); these folders are built to be renamed into place as outputs.
    """
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    path.chmod(0o777 & ~_umask())
    return path


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def finite_or_null(obj: Any) -> Any:
    """`obj` (nested dicts, lists, numbers) with every NaN or infinite float replaced by None.

    json.dumps writes them as NaN / Infinity, which strict JSON readers (jq, browsers, other languages) reject.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(value) for value in obj]
    return obj


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
