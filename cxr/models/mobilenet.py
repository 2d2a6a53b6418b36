"""timm MobileNets (v1-v4) as pneumonia classifiers, with optional local pretrained weights."""

from __future__ import annotations

import logging

import timm
import torch
from torch import nn

from cxr.models.weights import load_local_weights

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
            skipped and logged, leaving the new head at its zero start. Nothing is downloaded.

    The classifier starts at zero (every logit 0), not at timm's fan-out scaled init.

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
        # timm scales a small head's init by its fan-out: for one logit that draws weights up to ±1
        # over 1,280 features, so training starts from logits of std ~6 and a loss ~6; zero starts
        # every class at even odds (loss log 2) and the head still learns from the first step
        classifier = self.model.get_classifier()
        nn.init.zeros_(classifier.weight)
        nn.init.zeros_(classifier.bias)
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
