"""The datamodule a checkpoint was trained with, rebuilt from its metadata on a new data folder.

Checkpoints written by ``cxr-train`` name their datamodule (``meta["datamodule_target"]``, a dotted
class path) and its arguments (``meta["datamodule"]``, without ``data_dir``). Older checkpoints have
no target: it follows from the task. Only classes inside :mod:`cxr.data` are imported, so a crafted
checkpoint cannot make prediction import arbitrary code.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

# checkpoints written before the metadata named the datamodule
_BY_TASK = {
    "detection": "cxr.data.rsna.RSNADataModule",
    "classification": "cxr.data.ped_cxr.PedChestXrayDataModule",
}


def datamodule_class(meta: dict, task: str) -> type:
    """The datamodule class a checkpoint's metadata names (or its task implies, for older files).

    Raises:
        ValueError: the target lies outside ``cxr.data`` or does not exist.
    """
    target = meta.get("datamodule_target") or _BY_TASK[task]
    module_name, _, name = target.rpartition(".")
    if not module_name.startswith("cxr.data."):
        raise ValueError(f"checkpoint names datamodule {target!r}; only cxr.data classes are loaded")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"checkpoint names datamodule {target!r}, which does not exist ({err})") from None


def rebuild_datamodule(
    meta: dict, task: str, data_dir: str | Path, stage: str = "validate", **overrides: Any
):
    """The checkpoint's datamodule on ``data_dir``, its stored arguments updated by ``overrides``
    (arguments the class does not take are left out), set up for ``stage``."""
    cls = datamodule_class(meta, task)
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in {**meta.get("datamodule", {}), **overrides}.items() if k in accepted}
    datamodule = cls(data_dir=data_dir, **kwargs)
    datamodule.setup(stage)
    return datamodule
