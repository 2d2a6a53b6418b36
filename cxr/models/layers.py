"""Building blocks shared by :class:`~cxr.models.PlainCNN` and :class:`~cxr.models.DepthwiseCNN`.

Both networks are the same skeleton (Go & Bissaliyeva's Keras "standard CNN"): a stack of stages,
each a 3x3 conv block with one 2x2 max-pool, followed by a dense head. They differ only in the
stages, so the skeleton lives here as :class:`ConvPoolClassifier` and each model file says how to
build one stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """Standard 3x3 convolution (stride 1, "same" padding), optional BatchNorm, ReLU.

    Maps float32 (B, in_chs, H, W) -> (B, out_chs, H, W). Without BN the conv carries a bias
    (Keras ``Conv2D`` default); with BN the bias is redundant and dropped.
    """

    def __init__(self, in_chs: int, out_chs: int, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_chs))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DepthwiseSeparableConv(nn.Sequential):
    """MobileNet-v1 separable convolution: depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU, optionally with a 2x2 max-pool.

    Maps float32 (B, in_chs, H, W) -> (B, out_chs, H, W) with ``pool=None``, or
    (B, out_chs, H // 2, W // 2) when the block pools. The depthwise half sees 3x3 neighbourhoods
    per channel, the pointwise half mixes channels per pixel, so a standard 3x3 conv costing
    ``9*in_chs*out_chs`` multiply-adds per pixel becomes ``9*in_chs + in_chs*out_chs``.

    Where the pool goes decides what runs at full resolution:

    - ``"before"``: pool the input, then both halves run on the pooled map. The cheapest choice
      when the input is wide, as it is inside a network: on CPU these blocks are memory-bound, and
      a wide depthwise conv at full resolution costs more than its FLOPs suggest.
    - ``"between"``: depthwise conv at full resolution, pool, pointwise conv on the pooled map.
      For a block that sees the image itself: the learned 3x3 filter gets every input pixel, and
      on a 1- or 3-channel input the full-resolution depthwise conv costs next to nothing.
    """

    POOLS = (None, "before", "between")

    def __init__(self, in_chs: int, out_chs: int, pool: str | None = None) -> None:
        if pool not in self.POOLS:
            raise ValueError(f"pool must be one of {self.POOLS}, got {pool!r}")
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool == "before" else []
        layers += [
            nn.Conv2d(in_chs, in_chs, 3, padding=1, groups=in_chs, bias=False),
            nn.BatchNorm2d(in_chs),
            nn.ReLU(inplace=True),
        ]
        if pool == "between":
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class ConvPoolClassifier(nn.Module):
    """``len(widths)`` stages (each halves H and W), then average pool -> flatten -> dense -> ReLU -> dropout -> fc.

    Stage ``k`` is ``make_stage(k, in_chs, out_chs)``, which maps ``in_chans`` (k = 0) or
    ``widths[k - 1]`` channels to ``widths[k]`` and must halve H and W; the stages are built in
    order, before the head, so a seeded model initialises the same whatever the subclass.

    The adaptive average pool to a ``pool_size`` x ``pool_size`` grid is what lets any input size
    work: ``pool_size=1`` is global average pooling; with five stages at 200 px the last map is
    6x6, so ``pool_size=6`` equals the paper's Keras ``Flatten`` exactly at that size.

    Input float32 (B, in_chans, H, W), H and W >= 2**len(widths) (32 for five stages).
    Output logits float32 (B, num_classes). timm vocabulary: ``num_features`` (channels of the
    ``forward_features`` map, ``widths[-1]``), ``head_hidden_size`` (= ``hidden``, what
    ``forward_head(x, pre_logits=True)`` returns), ``forward_features``, ``forward_head``.
    """

    def __init__(
        self,
        in_chans: int,
        widths: Sequence[int],
        make_stage: Callable[[int, int, int], nn.Module],
        num_classes: int,
        hidden: int,
        pool_size: int,
        drop_rate: float,
    ) -> None:
        super().__init__()
        widths = check_widths(widths, in_chans)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1 = one logit for BCE), got {num_classes}")
        if hidden < 1 or pool_size < 1:
            raise ValueError(f"hidden and pool_size must be >= 1, got hidden={hidden}, pool_size={pool_size}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.head_hidden_size = hidden
        self.min_size = 2 ** len(widths)
        ins = (in_chans, *widths[:-1])
        stages = [make_stage(k, i, o) for k, (i, o) in enumerate(zip(ins, widths, strict=True))]
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(1))
        self.pre_logits = nn.Sequential(
            nn.Linear(self.num_features * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> feature map (B, num_features, H / 2**n, W / 2**n) (floor division)."""
        if x.ndim != 4 or min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"{type(self).__name__} expects (B, C, H, W) with H, W >= {self.min_size}, got {tuple(x.shape)}"
            )
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (B, num_classes), or the dense activations (B, hidden) if ``pre_logits``."""
        x = self.pre_logits(self.pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def check_widths(widths: Sequence[int], in_chans: int) -> tuple[int, ...]:
    """Validate the shared ``widths`` / ``in_chans`` arguments; returns widths as a tuple of ints."""
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    return widths
