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


__all__ = ["CLASSIFIERS", "MODELS", "DepthwiseCNN", "MobileNet", "PlainCNN", "create_model"]
