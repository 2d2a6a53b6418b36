"""Go & Bissaliyeva's "standard CNN" baseline for pneumonia classification."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cxr.models.layers import ConvBNReLU, ConvPoolClassifier, check_pool


class PlainCNN(ConvPoolClassifier):
    """Stacked 3x3 conv + ReLU + 2x2 max-pool stages, Keras ``Flatten`` and a dense head.

    The defaults are the network of Go & Bissaliyeva's experiments, which lists only CONV (with
    RELU), POOL and FULLY-CONNECTED layers: a 200x200 input, a first conv of 256 filters
    (200x200x256), a 2x2 max-pool (100x100x256), ..., and fully connected layers on the flattened
    last volume. Counted as Keras' ``model.summary()`` does (ReLU fused into ``Conv2D``/``Dense``)::

        5 x (Conv2D 3x3, MaxPooling2D 2x2)                               10
        Flatten (32 x 6 x 6 = 1152 values at 200 px)                      1
        Dense(hidden, relu), Dropout(drop_rate), Dense(num_classes)      3
                                                                        --
                                                                        14

    The paper's "19 layers" cannot be rebuilt from its text; no layer is added to reach it. The
    widths after the first, the hidden dense layer and its dropout are not in the paper either
    (they follow the Keras notebook the paper builds on): experiments/FIDELITY.md lists them.
    Most of the compute sits in the first two stages (about 6.5 GFLOPs per image at 200 px).

    Args:
        in_chans: input channels (1 for radiographs, 3 for RGB-replicated images).
        num_classes: 1 = a single logit for binary BCE; > 1 = logits for softmax classes.
        widths: filters of each conv stage; one 2x2 max-pool per stage, so inputs need
            H, W >= 2**len(widths).
        batch_norm: BatchNorm between each conv and its ReLU (not in the paper; off by default).
        pool: ``"after"`` (the paper: conv, then pool) or ``"before"``: every stage but the first
            max-pools its input and then convolves, so each conv runs on a quarter of the pixels
            (the first stage still convolves the full-resolution image, then pools). The standard-conv
            counterpart of ``DepthwiseCNN(pool="before")``, to separate the effect of pooling early
            from that of separability; the receptive field grows from 94 to 154 px at five stages.
        head: ``"flatten"`` (the paper: Keras ``Flatten``; inputs must be ``image_size`` square) or
            ``"avgpool"`` (adaptive average pooling to ``pool_size``; any input size).
        image_size: input side the flatten head is sized for (the datamodule's ``image_size``).
        pool_size: grid of the ``"avgpool"`` head (1 = global average pooling).
        hidden: units of the dense layer before the output.
        drop_rate: dropout before the output layer.

    Input: float32 (B, in_chans, H, W), normalised images. Output: logits float32 (B, num_classes).
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 1,
        widths: Sequence[int] = (256, 128, 64, 32, 32),
        batch_norm: bool = False,
        pool: str = "after",
        head: str = "flatten",
        image_size: int = 200,
        pool_size: int = 1,
        hidden: int = 128,
        drop_rate: float = 0.5,
    ) -> None:
        check_pool(pool)

        def stage(index: int, in_chs: int, out_chs: int) -> nn.Module:
            conv = ConvBNReLU(in_chs, out_chs, batch_norm=batch_norm)
            if pool == "before" and index > 0:
                return nn.Sequential(nn.MaxPool2d(2), conv)
            return nn.Sequential(conv, nn.MaxPool2d(2))

        super().__init__(
            in_chans,
            widths,
            stage,
            num_classes,
            hidden,
            drop_rate,
            head=head,
            image_size=image_size,
            pool_size=pool_size,
        )
        self.pool_placement = pool
