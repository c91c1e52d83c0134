"""Atomic file output: a reader never sees a half-written artifact."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


TEMPORARY = ".*.tmp"  # what atomic_write_bytes leaves behind when a run is killed


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what killed writes left in ``folder`` (not below it); the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stray = [p for p in folder.glob(TEMPORARY) if p.is_file()]
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
