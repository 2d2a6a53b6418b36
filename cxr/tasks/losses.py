"""Classification losses for imbalanced data: (class-weighted) BCE / cross-entropy and focal loss.

All take raw logits. Binary models emit one logit per image, (B, 1), with targets in {0, 1};
multiclass models emit (B, C) with integer targets in [0, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

LOSSES = ("bce", "ce", "focal")


class ClassificationLoss(nn.Module):
    """Loss selected by name.

    Args:
        name: ``"bce"`` (binary, one logit), ``"ce"`` (softmax cross-entropy, C ≥ 2 logits) or
            ``"focal"`` (Lin et al. 2017: sigmoid focal loss for one logit, softmax focal loss for C).
        num_classes: model outputs; 1 means binary.
        class_weights: optional float tensor (2,) for binary or (C,) weighting each class's samples,
            e.g. inverse frequency; for focal loss they take the role of alpha.
        focal_gamma: focusing parameter of the focal loss.
    """

    def __init__(
        self,
        name: str = "bce",
        num_classes: int = 1,
        class_weights: torch.Tensor | None = None,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
        if name == "bce" and num_classes != 1:
            raise ValueError(
                f"loss 'bce' needs a model with num_classes=1 (one logit), got {num_classes}; "
                "use loss=ce for several classes"
            )
        if name == "ce" and num_classes < 2:
            raise ValueError("loss 'ce' needs num_classes >= 2; use loss=bce for one logit")
        self.name, self.num_classes, self.focal_gamma = name, num_classes, focal_gamma
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 1:
            logits, y = logits.reshape(-1), target.float().reshape(-1)
            w = None if self.class_weights is None else self.class_weights[target.long().reshape(-1)]
            if self.name == "focal":
                loss = sigmoid_focal_loss(logits, y, alpha=-1, gamma=self.focal_gamma, reduction="none")
            else:
                loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
            return loss.mean() if w is None else (loss * w).sum() / w.sum()
        if self.name == "focal":
            logp = F.log_softmax(logits, dim=1).gather(1, target.long()[:, None]).squeeze(1)
            loss = -((1 - logp.exp()) ** self.focal_gamma) * logp
            w = None if self.class_weights is None else self.class_weights[target.long()]
            return loss.mean() if w is None else (loss * w).sum() / w.sum()
        return F.cross_entropy(logits, target.long(), weight=self.class_weights)
