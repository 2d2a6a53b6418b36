"""What a classifier's logits mean: the one conversion to probabilities that training and prediction share.

Every classifier of :mod:`cxr.models` returns logits float32 (B, C): C = 1 is one logit for binary
cross-entropy (sigmoid = P(pneumonia)); C > 1 are softmax classes with class 0 = normal. Either way
:func:`class_probabilities` gives (B, max(C, 2)) probabilities whose column 0 is normal, so the
pneumonia probability is always ``1 - probs[:, 0]``.
"""

from __future__ import annotations

import torch


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Logits (B, C) -> class probabilities (B, max(C, 2)), rows summing to 1, column 0 = normal."""
    if logits.ndim != 2:
        raise ValueError(f"expected logits (B, C), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return logits.softmax(dim=1)


def pneumonia_probability(probs: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, K) from :func:`class_probabilities` -> P(not normal) (B,)."""
    return 1 - probs[:, 0]
