"""Local weight files for encoders (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``): nothing is downloaded.

:func:`load_local_weights` loads a state dict with ``weights_only=True`` (or safetensors), adapts the
first conv to the model's input channels (timm's ``adapt_input_conv``) and reports what did not match.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn

log = logging.getLogger(__name__)


def refused_object(err: Exception) -> str:
    """What ``torch.load(weights_only=True)`` refused, e.g. ``GLOBAL builtins.exec``, from its error.

    Only the object's name: torch's message goes on to suggest loading with ``weights_only=False``
    or allow-listing the object, which would run code from an untrusted file, so none of it is shown.
    """
    found = re.search(r"GLOBAL\s+[\w.]+", str(err))
    return found.group(0) if found else "an object that is not a tensor or a plain container"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    elif path.suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path}: refused to load: the file holds Python objects other than tensors and plain "
                f"containers ({refused_object(err)}); save the weights with torch.save(model.state_dict()) "
                "or as .safetensors"
            ) from None
    else:
        raise ValueError(
            f"{path}: expected a .safetensors, .pth or .pt state dict, got suffix {path.suffix!r}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: expected a flat state dict of tensors (model.state_dict()), got {type(state)}"
        )
    return state


def load_local_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local state dict into a timm ``model``; returns the skipped classifier keys.

    The stem (``pretrained_cfg["first_conv"]``) is adapted to the model's input channels, the
    classifier (``pretrained_cfg["classifier"]``) is skipped if its shape differs. Any other shape
    mismatch or unknown key means the file belongs to another architecture and raises ValueError;
    model keys absent from the file are logged with their count.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    source = _read_state_dict(path)
    target = model.state_dict()
    first_conv = model.pretrained_cfg["first_conv"] + ".weight"
    classifier = model.pretrained_cfg["classifier"]

    matched = [k for k in source if k in target]
    if not matched:
        raise ValueError(
            f"{path}: none of its {len(source)} keys match {type(model).__name__} "
            f"(e.g. file {list(source)[:3]} vs model {list(target)[:3]})"
        )
    unexpected = [k for k in source if k not in target]
    if unexpected:
        raise ValueError(
            f"{path}: {len(unexpected)} keys unknown to the model, e.g. {unexpected[:5]}; "
            "is it a state dict of another variant?"
        )

    skipped: list[str] = []
    for key in matched:
        if source[key].shape == target[key].shape:
            continue
        if key == first_conv:
            source[key] = adapt_input_conv(target[key].shape[1], source[key])
            if source[key].shape != target[key].shape:
                raise ValueError(
                    f"{path}: stem {key} has shape {tuple(source[key].shape)} after adapting "
                    f"its input channels, the model expects {tuple(target[key].shape)}"
                )
        elif key.startswith(classifier + "."):
            skipped.append(key)
        else:
            raise ValueError(
                f"{path}: {key} has shape {tuple(source[key].shape)}, "
                f"the model expects {tuple(target[key].shape)}"
            )
    for key in skipped:
        del source[key]
    if skipped:
        log.info(
            "%s: skipped classifier weights of another shape (new head initialised at random): %s",
            path,
            skipped,
        )
    missing = [k for k in target if k not in source and k not in skipped]
    if missing:
        log.warning(
            "%s: %d model keys absent from the file keep their initial values, e.g. %s",
            path,
            len(missing),
            missing[:5],
        )
    model.load_state_dict(source, strict=False)
    return skipped
