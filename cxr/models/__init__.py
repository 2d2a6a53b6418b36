"""Networks as plain ``nn.Module``s, and the one registry that names them.

``MODELS`` is a literal dict, name -> class, kept in alphabetical order; a new model is one import
and one line here (no decorators, no import side effects). The names are also the Hydra config
names under ``conf/model/``. Importing this package loads only torch, torchvision and timm.
"""

from __future__ import annotations

import inspect

from torch import nn

from cxr.models.depthwise_cnn import DepthwiseCNN
from cxr.models.mobilenet import MobileNet
from cxr.models.plain_cnn import PlainCNN
from cxr.models.retinanet import RetinaNet

MODELS: dict[str, type[nn.Module]] = {
    "depthwise_cnn": DepthwiseCNN,
    "mobilenet": MobileNet,
    "plain_cnn": PlainCNN,
    "retinanet": RetinaNet,
}

# Image classifiers: (B, C, H, W) -> logits (B, num_classes), timm vocabulary.
CLASSIFIERS = ("depthwise_cnn", "mobilenet", "plain_cnn")

# The constructor defaults that checkpoints of metadata format version 1 were written under, for
# every argument whose default has changed since (or that did not exist then). Version-1 metadata
# holds the config's keys, which then named every argument but these; filling them in rebuilds the
# network such a checkpoint was trained as. Newer checkpoints store every argument (see
# :func:`constructor_arguments`), so a default may change without breaking them.
LEGACY_DEFAULTS: dict[str, dict[str, object]] = {
    "depthwise_cnn": {"pool": "before", "head": "avgpool"},
    "plain_cnn": {"batch_norm": True, "head": "avgpool"},
}


def create_model(name: str, **kwargs) -> nn.Module:
    """Build ``MODELS[name](**kwargs)``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
        TypeError: a keyword the model does not take (the message names it and the model).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    cls = MODELS[name]
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {name!r} ({cls.__name__}) got unknown argument(s) {unknown}; it accepts {accepted}"
        )
    return cls(**kwargs)


def constructor_arguments(name: str, kwargs: dict) -> dict:
    """Every constructor argument of ``MODELS[name]``: its defaults, overridden by ``kwargs``.

    Tuples become lists, so the result is plain data (YAML, ``torch.load(weights_only=True)``).
    Unknown keys raise as in :func:`create_model`.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"model {name!r} got unknown argument(s) {unknown}; it accepts {list(params)}")
    defaults = {k: p.default for k, p in params.items() if p.default is not p.empty}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in {**defaults, **kwargs}.items()}


def input_size_kwargs(name: str, image_size: int) -> dict[str, int]:
    """``{"image_size": image_size}`` when the layers of ``MODELS[name]`` are sized by its input
    side (the flatten head of PlainCNN and DepthwiseCNN, RetinaNet's anchors), else ``{}``: what to
    add to :func:`create_model`'s arguments to build ``name`` for ``image_size`` px inputs."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    return (
        {"image_size": int(image_size)} if "image_size" in inspect.signature(MODELS[name]).parameters else {}
    )


__all__ = [
    "CLASSIFIERS",
    "LEGACY_DEFAULTS",
    "MODELS",
    "DepthwiseCNN",
    "MobileNet",
    "PlainCNN",
    "constructor_arguments",
    "create_model",
    "input_size_kwargs",
]
