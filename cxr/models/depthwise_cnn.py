"""The plain CNN skeleton with depthwise separable convolutions (Go & Bissaliyeva's light model)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cxr.models.layers import ConvBNReLU, ConvPoolClassifier, DepthwiseSeparableConv, check_pool, check_widths

SEPARABLE_PRESETS = ("all", "first", "none")


def _resolve_separable(separable: Sequence[bool] | str, n_blocks: int) -> tuple[bool, ...]:
    if isinstance(separable, str):
        if separable not in SEPARABLE_PRESETS:
            raise ValueError(
                f"separable must be one of {SEPARABLE_PRESETS} or a list of bools, got {separable!r}"
            )
        if separable == "first":
            return (True,) + (False,) * (n_blocks - 1)
        return (separable == "all",) * n_blocks
    flags = tuple(separable)
    if len(flags) != n_blocks or not all(isinstance(f, bool) for f in flags):
        raise ValueError(f"separable must hold one bool per stage ({n_blocks}), got {flags}")
    return flags


class DepthwiseCNN(ConvPoolClassifier):
    """:class:`~cxr.models.PlainCNN` with its 3x3 convs replaced by :class:`DepthwiseSeparableConv`.

    By default the literal swap: PlainCNN's skeleton (widths, depth, pooling, head) with each 3x3
    conv replaced by depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU and the 2x2
    max-pool after the block, where PlainCNN pools. Every stage output then has PlainCNN's shape
    and the receptive field is PlainCNN's (94 px at five stages); at 200 px with the default widths
    the network needs about 1/8.4 of PlainCNN's FLOPs.

    ``pool="before"`` is a different network, kept because it is much faster: each separable stage
    max-pools its input first and runs both halves on the pooled map, except the first, which
    filters the image at full resolution and pools between the halves (see
    :class:`DepthwiseSeparableConv`). At 200 px that is about 1/33 of PlainCNN's FLOPs, but most of
    the saving comes from running on a quarter of the pixels, not from separability, and the
    receptive field grows to 154 px. ``PlainCNN(pool="before")`` is its standard-conv counterpart.

    Stages left standard (``separable="first"``, ``"none"`` or a list) are PlainCNN's
    3x3 conv -> (BN) -> ReLU -> 2x2 max-pool whatever ``pool`` says, as they were before ``pool``
    existed, so that the stored arguments of older checkpoints rebuild their networks.

    BatchNorm: the paper's depthwise network is "implemented the same way" as its plain CNN and
    says nothing of BN; it did not train. BN is on by default here because the separable stack
    needs it to train from scratch; ``batch_norm=False`` gives each conv a bias instead (then
    ``separable="none"`` is exactly the paper's PlainCNN).

    Args:
        in_chans: input channels (1 or 3).
        num_classes: 1 = a single logit for binary BCE; > 1 = logits for softmax classes.
        widths: output channels of each stage; one 2x2 max-pool per stage (H, W >= 2**len(widths)).
        separable: which stages are separable: ``"all"`` (default), ``"none"`` (standard convs),
            ``"first"`` (only the first stage; the paper's variant that failed to train), or one
            bool per stage.
        pool: ``"after"`` (default, the literal swap) or ``"before"`` (see above).
        batch_norm: BatchNorm after every conv, standard and separable (see above).
        mid_activation: the separable stages' form (:class:`DepthwiseSeparableConv`): ``True``
            (MobileNet: BN and ReLU between the depthwise and pointwise convs) or ``False``
            (Xception / Keras ``SeparableConv2D``: nothing between them).
        head: ``"flatten"`` (Keras ``Flatten``, inputs ``image_size`` square) or ``"avgpool"``
            (adaptive average pooling to ``pool_size``; any input size).
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
        separable: Sequence[bool] | str = "all",
        pool: str = "after",
        batch_norm: bool = True,
        mid_activation: bool = True,
        head: str = "flatten",
        image_size: int = 200,
        pool_size: int = 1,
        hidden: int = 128,
        drop_rate: float = 0.5,
    ) -> None:
        widths = check_widths(widths, in_chans)  # before resolving `separable`, which needs the stage count
        flags = _resolve_separable(separable, len(widths))
        check_pool(pool)

        def stage(index: int, in_chs: int, out_chs: int) -> nn.Module:
            if not flags[index]:
                return nn.Sequential(ConvBNReLU(in_chs, out_chs, batch_norm=batch_norm), nn.MaxPool2d(2))
            if pool == "after":
                return nn.Sequential(
                    DepthwiseSeparableConv(
                        in_chs, out_chs, batch_norm=batch_norm, mid_activation=mid_activation
                    ),
                    nn.MaxPool2d(2),
                )
            placement = "between" if index == 0 else "before"
            return DepthwiseSeparableConv(
                in_chs, out_chs, pool=placement, batch_norm=batch_norm, mid_activation=mid_activation
            )

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
        self.separable = flags
        self.pool_placement = pool
        self.mid_activation = mid_activation
