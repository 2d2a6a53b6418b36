"""timm MobileNets (v1-v4) as pneumonia classifiers, with optional local pretrained weights."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

log = logging.getLogger(__name__)


class MobileNet(nn.Module):
    """A timm MobileNet built with ``pretrained=False``; weights come only from a local file.

    The default ``mobilenetv2_100`` is the inverted-residual network of depthwise separable convs
    with BN and ReLU6 throughout, the closest relative of :class:`~cxr.models.DepthwiseCNN`;
    ``mobilenetv3_small_100`` (SE + hard-swish, ~1/5 of the FLOPs) and ``mobilenetv3_large_100``
    are the usual alternatives. Any timm name starting with ``mobilenet`` is accepted.

    Args:
        in_chans: input channels (1 or 3).
        num_classes: 1 = a single logit for binary BCE; > 1 = logits for softmax classes.
        variant: timm model name.
        drop_rate: dropout before the classifier.
        pretrained_path: a local ``.safetensors`` or ``.pth``/``.pt`` state dict of the same timm
            variant (e.g. saved with ``torch.save(timm_model.state_dict(), path)``). A 3-channel
            stem is adapted to ``in_chans`` with ``timm.models.adapt_input_conv`` (RGB kernels
            summed for one channel); a classifier of another shape (e.g. 1000 ImageNet classes) is
            skipped and logged, leaving the new head randomly initialised. Nothing is downloaded.

    Input: float32 (B, in_chans, H, W), normalised images, H, W >= 32. Output: logits float32
    (B, num_classes). timm vocabulary (``num_features``, ``forward_features``, ``forward_head``)
    is delegated to the wrapped model, kept as ``self.model``.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 1,
        variant: str = "mobilenetv2_100",
        drop_rate: float = 0.2,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        valid = timm.list_models("mobilenet*")
        if variant not in valid:
            raise ValueError(f"unknown MobileNet variant {variant!r}; timm offers {valid}")
        if in_chans < 1 or num_classes < 1:
            raise ValueError(f"in_chans and num_classes must be >= 1, got {in_chans}, {num_classes}")
        self.model = timm.create_model(
            variant, pretrained=False, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate
        )
        self.variant = variant
        self.num_classes = num_classes
        self.num_features = self.model.num_features
        self.head_hidden_size = getattr(self.model, "head_hidden_size", self.num_features)
        if pretrained_path is not None:
            load_local_weights(self.model, pretrained_path)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> feature map (B, num_features, H / 32, W / 32)."""
        return self.model.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (B, num_classes), or pooled features (B, head_hidden_size)."""
        return self.model.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    elif path.suffix in (".pth", ".pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
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
