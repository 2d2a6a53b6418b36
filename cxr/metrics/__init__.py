"""Evaluation metrics (no Lightning, Hydra or pydicom imports here)."""

from cxr.metrics.rsna_map import RSNA_IOU_THRESHOLDS, RSNAMeanAP, rsna_image_scores, rsna_map

__all__ = ["RSNA_IOU_THRESHOLDS", "RSNAMeanAP", "rsna_image_scores", "rsna_map"]
