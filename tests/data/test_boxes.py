"""Box frames: scaling between original pixels and the network input, and back."""

from __future__ import annotations

import numpy as np
import torch

from cxr.data.boxes import scale_boxes, to_original


def test_scaling_round_trip_and_hand_values() -> None:
    boxes = np.array([[100, 200, 300, 400], [0, 0, 800, 1000]], np.float32)
    scaled = scale_boxes(boxes, (1000, 800), 64)  # (H, W): x by 64/800, y by 64/1000
    np.testing.assert_allclose(scaled, [[8, 12.8, 24, 25.6], [0, 0, 64, 64]], atol=1e-5)
    np.testing.assert_allclose(to_original(scaled, (1000, 800), 64), boxes, atol=1e-3)
    t = torch.tensor(boxes)
    back = to_original(scale_boxes(t, torch.tensor([1000, 800]), 64), torch.tensor([1000, 800]), 64)
    assert isinstance(back, torch.Tensor)
    torch.testing.assert_close(back, t)
