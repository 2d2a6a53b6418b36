"""Checkpoint files written atomically in their own folder: a checkpoint is either the previous
complete file or the new complete file, never a truncated one.

Lightning's ``TorchCheckpointIO`` serialises to memory and writes through an fsspec transaction,
whose local temporary file lives in the system temp folder; committing it into the run folder is a
copy when the two are on different file systems, and a full disk during that copy truncates
``last.ckpt`` so that the run cannot resume. :class:`AtomicCheckpointIO` writes a temporary file
beside the target, flushes and fsyncs it, then ``os.replace`` s it over the target (atomic within a
folder) and fsyncs the folder; on any failure the temporary file is removed and the target is left
as it was. :class:`~cxr.tasks.callbacks.resume.ResumeCheckpoint` installs it on the trainer, so
every checkpoint of a run (``ModelCheckpoint``'s and the resume point) is written this way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders; the rename is still atomic
    finally:
        os.close(fd)


def save_atomic(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """``torch.save(checkpoint)`` to ``path`` through ``.<name>.<random>.tmp`` in the same folder:
    write, flush, fsync, ``os.replace``. On failure the temporary file is removed and ``path`` is
    untouched; the error propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with :func:`save_atomic` for local paths (remote URLs,
    ``s3://...``, keep Lightning's own writer). Loading and removal are Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomic(checkpoint, path)
