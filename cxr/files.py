"""Writing small text files so that a reader never sees half of one.

:func:`write_text_atomic` writes ``.<name>.<pid>.tmp`` beside the target and renames it over the
target (atomic within a file system); the temporary file is removed on every failure path. Used
for run folders' ``config.yaml`` / ``metrics.json``, the image cache's ``meta.json``,
``postprocess.json`` and ``test_predictions.csv``; checkpoints have their own fsynced writer
(:mod:`cxr.tasks.checkpoint_io`).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
