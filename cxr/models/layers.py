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

HEADS = ("flatten", "avgpool")
POOL_PLACEMENTS = ("after", "before")


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
    """Depthwise 3x3 conv followed by a pointwise 1x1 conv, optionally with a 2x2 max-pool.

    Two forms of the same factorisation:

    - ``mid_activation=True`` (default, MobileNet v1): depthwise 3x3 -> BN -> ReLU -> pointwise
      1x1 -> BN -> ReLU.
    - ``mid_activation=False`` (Xception, Keras ``SeparableConv2D``): depthwise 3x3 -> pointwise
      1x1 -> BN -> ReLU, with nothing between the halves. On a 1-channel input the MobileNet form
      squeezes the image through a single ReLU unit, which can leave a BN-free network almost blind
      to its input; the linear form cannot lose the filtered image that way.

    Maps float32 (B, in_chs, H, W) -> (B, out_chs, H, W) with ``pool=None``, or
    (B, out_chs, H // 2, W // 2) when the block pools. The depthwise half sees 3x3 neighbourhoods
    per channel, the pointwise half mixes channels per pixel, so a standard 3x3 conv costing
    ``9*in_chs*out_chs`` multiply-adds per pixel becomes ``9*in_chs + in_chs*out_chs``. Without
    BN (``batch_norm=False``) each conv that a BN would follow carries a bias instead, initialised
    to zero: PyTorch's default bias init draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which for
    a pointwise conv fed by one channel is U(-1, 1) and swamps the filtered image.

    Where the pool goes decides what runs at full resolution:

    - ``None``: no pool here (the caller pools after the block, as a standard conv block does).
    - ``"before"``: pool the input, then both halves run on the pooled map. The cheapest choice
      when the input is wide, as it is inside a network, but each stage then sees a coarser map
      and the receptive field grows faster than a standard conv stack's.
    - ``"between"``: depthwise conv at full resolution, pool, pointwise conv on the pooled map.
      For a block that sees the image itself: the learned 3x3 filter gets every input pixel, and
      on a 1- or 3-channel input the full-resolution depthwise conv costs next to nothing.
    """

    POOLS = (None, "before", "between")

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        pool: str | None = None,
        batch_norm: bool = True,
        mid_activation: bool = True,
    ) -> None:
        if pool not in self.POOLS:
            raise ValueError(f"pool must be one of {self.POOLS}, got {pool!r}")
        # the module order (and so the state-dict keys) with BN is the one older checkpoints hold
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool == "before" else []
        layers.append(
            nn.Conv2d(in_chs, in_chs, 3, padding=1, groups=in_chs, bias=mid_activation and not batch_norm)
        )
        if mid_activation:
            layers += [nn.BatchNorm2d(in_chs)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
        if pool == "between":
            layers.append(nn.MaxPool2d(2))
        layers.append(nn.Conv2d(in_chs, out_chs, 1, bias=not batch_norm))
        layers += [nn.BatchNorm2d(out_chs)] if batch_norm else []
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        for layer in self:
            if isinstance(layer, nn.Conv2d) and layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ConvPoolClassifier(nn.Module):
    """``len(widths)`` stages (each halves H and W), then the head: features -> dense -> ReLU -> dropout -> fc.

    Stage ``k`` is ``make_stage(k, in_chs, out_chs)``, which maps ``in_chans`` (k = 0) or
    ``widths[k - 1]`` channels to ``widths[k]`` and must halve H and W (floor division); the stages
    are built in order, before the head, so a seeded model initialises the same whatever the subclass.

    ``head`` says how the last feature map reaches the dense layer:

    - ``"flatten"`` (Keras ``Flatten``, the paper's "connected to the neurons of the previous
      volume"): every value of the (widths[-1], g, g) map, g = image_size // 2**len(widths), feeds
      the dense layer, so the network takes ``image_size`` x ``image_size`` inputs only (with five
      stages at 200 px, g = 6: 32 * 6 * 6 = 1152 inputs). ``pool_size`` must stay 1.
    - ``"avgpool"``: adaptive average pooling to a ``pool_size`` x ``pool_size`` grid first
      (1 = global average pooling), so any input with H, W >= 2**len(widths) works; ``image_size``
      is not used.

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
        drop_rate: float,
        head: str = "flatten",
        image_size: int = 200,
        pool_size: int = 1,
    ) -> None:
        super().__init__()
        widths = check_widths(widths, in_chans)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1 = one logit for BCE), got {num_classes}")
        if hidden < 1 or pool_size < 1:
            raise ValueError(f"hidden and pool_size must be >= 1, got hidden={hidden}, pool_size={pool_size}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.head_hidden_size = hidden
        self.min_size = 2 ** len(widths)
        self.head = head
        if head == "flatten":
            if pool_size != 1:
                raise ValueError(
                    f"pool_size={pool_size} applies to head='avgpool' only; the flatten head has no pool"
                )
            if image_size < self.min_size:
                raise ValueError(
                    f"image_size must be >= {self.min_size} for {len(widths)} stages, got {image_size}"
                )
            self.feature_size = (image_size // self.min_size,) * 2  # floor-halving n times = // 2**n
            pool: nn.Module = nn.Flatten(1)
            in_features = self.num_features * self.feature_size[0] * self.feature_size[1]
        else:
            self.feature_size = None
            pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(1))
            in_features = self.num_features * pool_size * pool_size
        self.image_size = image_size
        ins = (in_chans, *widths[:-1])
        stages = [make_stage(k, i, o) for k, (i, o) in enumerate(zip(ins, widths, strict=True))]
        self.stages = nn.Sequential(*stages)
        self.pool = pool
        self.pre_logits = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> feature map (B, num_features, H // 2**n, W // 2**n)."""
        if x.ndim != 4 or min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"{type(self).__name__} expects (B, C, H, W) with H, W >= {self.min_size}, got {tuple(x.shape)}"
            )
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (B, num_classes), or the dense activations (B, hidden) if ``pre_logits``."""
        if self.feature_size is not None and tuple(x.shape[-2:]) != self.feature_size:
            g = self.feature_size[0]
            raise ValueError(
                f"{type(self).__name__} with head='flatten' takes {self.image_size}x{self.image_size} "
                f"inputs ({g}x{g} feature maps), got a {x.shape[-2]}x{x.shape[-1]} feature map; "
                "build it with image_size=<input side> or head='avgpool'"
            )
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


def check_pool(pool: str) -> str:
    """Validate a ``pool`` placement argument (``"after"`` or ``"before"``)."""
    if pool not in POOL_PLACEMENTS:
        raise ValueError(f"pool must be one of {POOL_PLACEMENTS}, got {pool!r}")
    return pool
