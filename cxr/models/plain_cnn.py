"""Go & Bissaliyeva's "standard CNN" baseline for pneumonia classification."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cxr.models.layers import ConvBNReLU, ConvPoolClassifier


class PlainCNN(ConvPoolClassifier):
    """Stacked 3x3 conv + ReLU + 2x2 max-pool blocks and a dense head (a Keras-style sequential CNN).

    With the defaults the network counts 19 layers the way Keras' ``model.summary()`` does (ReLU is
    the fused ``activation=`` of ``Conv2D``/``Dense``, not a layer of its own)::

        5 x (Conv2D 3x3, BatchNormalization, MaxPooling2D 2x2)        15
        pooling to a pool_size x pool_size grid + Flatten               1
        Dense(hidden, relu), Dropout(drop_rate), Dense(num_classes)     3
                                                                       --
                                                                       19

    The first conv has 256 filters and the widths then shrink, so most of the compute sits in the
    first two stages at 200 px (about 6.5 GFLOPs per image in total).

    Args:
        in_chans: input channels (1 for radiographs, 3 for RGB-replicated images).
        num_classes: 1 = a single logit for binary BCE; > 1 = logits for softmax classes.
        widths: filters of each conv block; one 2x2 max-pool per block, so inputs need
            H, W >= 2**len(widths).
        batch_norm: BatchNorm between each conv and its ReLU. On by default so that both
            skeletons compare like for like (DepthwiseCNN always has BN, which it needs to train)
            and the from-scratch stack tolerates larger learning rates; False gives the plain
            conv-ReLU-pool list (then 14 Keras layers).
        hidden: units of the dense layer before the output.
        pool_size: adaptive average pooling grid before the dense layer (1 = global average
            pooling; 6 reproduces Keras ``Flatten`` at 200 px with five blocks).
        drop_rate: dropout before the output layer.

    Input: float32 (B, in_chans, H, W), normalised images. Output: logits float32 (B, num_classes).
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 1,
        widths: Sequence[int] = (256, 128, 64, 32, 32),
        batch_norm: bool = True,
        hidden: int = 128,
        pool_size: int = 1,
        drop_rate: float = 0.5,
    ) -> None:
        def stage(index: int, in_chs: int, out_chs: int) -> nn.Module:
            return nn.Sequential(ConvBNReLU(in_chs, out_chs, batch_norm=batch_norm), nn.MaxPool2d(2))

        super().__init__(in_chans, widths, stage, num_classes, hidden, pool_size, drop_rate)
