"""Gabruseva et al.'s global image-classification head on the deepest encoder feature.

From the authors' ``GlobalClassificationModel`` (tatigabru/kaggle-rsna, ``pytorch_retinanet/model.py``)::

    C5 (B, C, h, w) -> 2×2 max-pool -> 3×3 conv (C -> 256, no padding) -> ReLU
       -> concat(global average pool, global max pool) (B, 512) -> dropout -> linear -> logits (B, classes)

The authors apply ``LogSoftmax`` and ``NLLLoss``; here the head returns logits and the task uses
cross-entropy, which is the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PooledConvHead(nn.Module):
    """Max-pool, 3×3 conv, ReLU, average ‖ max pooling, dropout, linear.

    Args:
        in_channels: channels C of the input feature map.
        num_classes: logits per image.
        hidden_channels: output channels of the 3×3 conv (256 in the authors' code).
        dropout: dropout probability before the linear layer (the authors: 0.5 or 0.75).

    Input float (B, C, h, w) with h, w ≥ 1; output float (B, num_classes). A map smaller than 6×6
    (e.g. C5 of a 64-px test image) is zero-padded to 3×3 after the max-pool, so the unpadded conv
    always has at least one output cell; at 256 px and more nothing is padded.
    """

    def __init__(
        self, in_channels: int, num_classes: int, hidden_channels: int = 256, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.conv = nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=0)
        self.fc = nn.Linear(2 * hidden_channels, num_classes)
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, 2, ceil_mode=min(x.shape[-2:]) < 2)  # floor, as the authors; never empty
        pad_h, pad_w = max(0, 3 - x.shape[-2]), max(0, 3 - x.shape[-1])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = F.relu(self.conv(x))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.fc(F.dropout(pooled, self.dropout, self.training))
