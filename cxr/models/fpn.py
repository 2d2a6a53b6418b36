"""Detection backbone: a timm encoder feeding torchvision's feature pyramid (P2/P3 … P7)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from cxr.models.weights import load_local_weights

# Encoder output strides used by the pyramid: C2 (stride 4) only feeds the extra small-anchor level P2.
_STRIDES_WITH_P2 = (4, 8, 16, 32)
_STRIDES = (8, 16, 32)


def _checked_weights(encoder: str, in_chans: int, path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a local classifier state dict strictly, with the stem adapted to ``in_chans``; return it
    and the ``pretrained_cfg`` entries that describe it.

    timm's ``pretrained_cfg_overlay=dict(file=...)`` loads feature extractors with ``strict=False``,
    so a file of another architecture would leave the encoder silently random; loading into the
    full classifier first (:func:`~cxr.models.mobilenet.load_local_weights`) raises instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights for encoder {encoder!r} not found: {path}")
    classifier = timm.create_model(encoder, in_chans=in_chans, pretrained=False)
    load_local_weights(classifier, path)
    # the stem now takes in_chans channels: say so, or timm warns that they mismatch its RGB config
    input_size = (in_chans, *classifier.pretrained_cfg["input_size"][1:])
    return classifier.state_dict(), dict(input_size=input_size)


def _to_stride(feature: torch.Tensor, input_size: torch.Size, stride: int) -> torch.Tensor:
    """``feature`` resized (bilinear) to ceil(input / stride) cells where it has another size."""
    size = tuple(-(-int(n) // stride) for n in input_size)
    if tuple(feature.shape[-2:]) == size:
        return feature
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)


class EncoderFPN(nn.Module):
    """timm ``features_only`` encoder + ``torchvision.ops.FeaturePyramidNetwork`` + P6/P7.

    Levels and strides: P2 (4, only with ``with_p2``), P3 (8), P4 (16), P5 (32), P6 (64), P7 (128).
    P6 and P7 come from P5 through torchvision's ``LastLevelP6P7`` (the RetinaNet-v2 variant), so an
    input of S×S pixels gives maps of ceil(S / stride) cells, each with ``fpn_channels`` channels.

    Encoders with unpadded ("valid") convolutions miss those sizes by a few cells (timm's
    ``inception_resnet_v2`` gives 124/61/30/14 at 512 px, ``legacy_xception`` 127 at stride 4): their
    features are resized (bilinear) to ceil(S / stride) before the pyramid, so every level is exactly
    2× the next and the anchors keep their nominal strides. (The authors instead padded every valid
    convolution of their own copies of these networks.) Aligned encoders are left untouched.

    Args:
        encoder: timm model name with stride-4/8/16/32 features at ``out_indices`` 1–4 (ResNet,
            SE-ResNeXt, MobileNetV3, EfficientNet, ...).
        in_chans: input channels (1 for radiographs).
        fpn_channels: channels of every pyramid level.
        with_p2: add the stride-4 level P2 built from the stride-4 encoder feature.
        pretrained_path: local state dict (``.pth``/``.pt``/``.safetensors``) of the timm classifier
            ``encoder`` (e.g. ``torch.save(timm.create_model(encoder).state_dict(), path)``); the
            classifier is dropped and the stem's RGB kernels are summed to ``in_chans``. Unknown
            keys or shapes raise ValueError. Never downloads. ``None`` = random initialisation.

    Attributes:
        out_channels: ``fpn_channels`` (the attribute torchvision detectors require).
        encoder_channels: channels of the deepest (stride-32) encoder feature.
    """

    def __init__(
        self,
        encoder: str = "seresnext50_32x4d",
        in_chans: int = 1,
        fpn_channels: int = 256,
        with_p2: bool = True,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        strides = _STRIDES_WITH_P2 if with_p2 else _STRIDES
        out_indices = tuple(range(5 - len(strides), 5))
        weights: dict = dict(pretrained=False)
        if pretrained_path is not None:
            state, cfg = _checked_weights(encoder, in_chans, pretrained_path)
            # timm's own loading maps the classifier's weights into the feature extractor
            weights = dict(pretrained=True, pretrained_cfg_overlay=dict(state_dict=state, **cfg))
        self.encoder = timm.create_model(
            encoder, features_only=True, out_indices=out_indices, in_chans=in_chans, **weights
        )
        reductions = tuple(self.encoder.feature_info.reduction())
        if reductions != strides:
            raise ValueError(
                f"encoder {encoder!r} gives feature strides {reductions} at out_indices "
                f"{out_indices}; the pyramid needs {strides}"
            )
        channels = self.encoder.feature_info.channels()
        self.strides = strides
        self.names = [f"p{s.bit_length() - 1}" for s in strides]  # stride 2^k -> "pk"
        self.fpn = FeaturePyramidNetwork(
            channels, fpn_channels, extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels)
        )
        self.out_channels = fpn_channels
        self.encoder_channels = channels[-1]

    def features(self, x: torch.Tensor) -> tuple[OrderedDict[str, torch.Tensor], torch.Tensor]:
        """Return (pyramid ``{"p2"|"p3": ..., "p7": ...}``, deepest encoder feature (B, C, S/32, S/32))."""
        feats = [_to_stride(f, x.shape[-2:], s) for f, s in zip(self.encoder(x), self.strides, strict=True)]
        pyramid = self.fpn(OrderedDict(zip(self.names, feats, strict=True)))
        return pyramid, feats[-1]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.features(x)[0]
