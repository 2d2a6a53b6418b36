"""Post-processing after training: ensembles, thresholds chosen on validation data, box sizes.

- :func:`ensemble_detections` / :func:`ensemble_images`: pool raw detections of several checkpoints
  and folds, one NMS (torchvision), scores averaged over members; :func:`average_probabilities`.
- :func:`shrink_boxes`, :func:`percentile_boxes`, :func:`adjust_box_sizes`: box sizes.
- :func:`sweep_nms`, :func:`best_thresholds`, :func:`choose_decision_threshold`, :func:`plot_nms_sweep`.
- :class:`PostprocessSettings`: the chosen values as ``postprocess.json`` beside the checkpoints,
  written by ``cxr-tune`` and read by ``cxr-predict``.
"""

from cxr.inference.postprocess.boxes import BOX_SIZE_METHODS, adjust_box_sizes, percentile_boxes, shrink_boxes
from cxr.inference.postprocess.ensemble import (
    SCORE_MODES,
    average_probabilities,
    ensemble_detections,
    ensemble_images,
)
from cxr.inference.postprocess.settings import FILENAME, PostprocessSettings, find_settings, settings_folder
from cxr.inference.postprocess.thresholds import (
    best_thresholds,
    choose_decision_threshold,
    plot_nms_sweep,
    sweep_nms,
)

__all__ = [
    "BOX_SIZE_METHODS",
    "FILENAME",
    "SCORE_MODES",
    "PostprocessSettings",
    "adjust_box_sizes",
    "average_probabilities",
    "best_thresholds",
    "choose_decision_threshold",
    "ensemble_detections",
    "ensemble_images",
    "find_settings",
    "percentile_boxes",
    "plot_nms_sweep",
    "settings_folder",
    "shrink_boxes",
    "sweep_nms",
]
