"""Self-describing checkpoints: what prediction needs travels inside the ``.ckpt``, loaded safely.

Lightning checkpoints written by ``cxr-train`` carry a ``"cxr"`` entry: the model's registry name
and constructor arguments, and the datamodule settings that define its input (image size,
normalisation, labels). :func:`load_model` rebuilds the model from the registry — never by
importing a path named in the file — and loads it with ``torch.load(weights_only=True)``, which
refuses to unpickle arbitrary objects.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from cxr.models.weights import refused_object
from cxr.tasks.checkpoint_format import META_KEY


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely; the message names the file and the problem."""


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict with ``weights_only=True``; a tampered or foreign file fails clearly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # only the refused object's name: torch's message advises weights_only=False, never wanted here
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors and "
            f"plain containers, so it may be tampered with ({refused_object(err)})"
        ) from None
    except Exception as err:  # RuntimeError (bad zip), EOFError, OSError ...: truncated or not a checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint, truncated or corrupt ({first})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: no 'state_dict' in the file; not a Lightning checkpoint")
    return ckpt


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model saved by ``cxr-train`` and return ``(model in eval mode, metadata)``."""
    from cxr.models import LEGACY_DEFAULTS, create_model

    ckpt = read_checkpoint(path)
    meta = ckpt.get(META_KEY)
    if not meta:
        raise CheckpointError(f"{path}: no '{META_KEY}' metadata; was it written by cxr-train?")
    kwargs = dict(meta["model_kwargs"])
    if int(meta.get("format_version", 1)) < 2:  # arguments added or re-defaulted since: their old values
        kwargs = {**LEGACY_DEFAULTS.get(meta["model_name"], {}), **kwargs}
    kwargs.pop("pretrained_path", None)  # the weights come from the checkpoint itself
    model = create_model(meta["model_name"], **kwargs)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model {meta['model_name']!r}: {err}") from err
    return model.eval(), meta
