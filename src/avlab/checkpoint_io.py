"""Checkpoint writes that a crash cannot leave half-done.

Lightning's TorchCheckpointIO moves a finished file into place through fsspec, but never fsyncs
it, so after a power loss or a kernel crash `last.ckpt` can be a zero-length or partial file that
resume then chokes on. AtomicCheckpointIO writes into a temporary file in the same folder,
fsyncs it, renames it over the target with `os.replace` (atomic on POSIX) and fsyncs the folder:
a reader sees the old checkpoint or the new one, never a mixture. A SIGKILL during the write
leaves the old file intact and a `.<name>.tmp-*` file beside it, which is removed on the next save.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

TMP_MARK = ".tmp-"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """`write(handle)` into a fsynced temporary file beside `path`, renamed over it atomically:
    a reader sees the old file or the new one, never a part (any file, not only checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}{TMP_MARK}*"):
        stale.unlink(missing_ok=True)  # left by a write that was killed
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save(obj, path) through a fsynced temporary file and an atomic rename."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are atomic and durable (remote URLs: Lightning's own)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
