"""The RSNA challenge metric: hand-computed cases, agreement with the per-image reference, the
accumulating torchmetrics wrapper, and input errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from cxr.metrics import RSNA_IOU_THRESHOLDS, RSNAMeanAP, rsna_image_scores, rsna_map
from cxr.metrics.rsna_reference import benchmark, random_detections, rsna_map_reference

NO_BOXES = torch.zeros(0, 4)


def pred(*boxes_and_scores: tuple[list[float], float]) -> dict:
    boxes = [b for b, _ in boxes_and_scores]
    scores = [s for _, s in boxes_and_scores]
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores)}


def target(*boxes: list[float]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)}


BOX = [0.0, 0.0, 10.0, 10.0]
HALF = [0.0, 0.0, 10.0, 5.0]  # inside BOX, IoU exactly 0.5


def both(preds: list[dict], targets: list[dict], **kwargs) -> float:
    """rsna_map, after checking that the reference agrees."""
    value = rsna_map(preds, targets, **kwargs)
    assert value == pytest.approx(rsna_map_reference(preds, targets, **kwargs), abs=1e-12)
    return value


def test_thresholds_are_the_challenges():
    assert RSNA_IOU_THRESHOLDS == pytest.approx(np.arange(0.40, 0.76, 0.05))
    assert len(RSNA_IOU_THRESHOLDS) == 8


def test_empty_submission_scores_zero():
    preds = [pred(), pred(), pred()]
    targets = [target(BOX), target(), target(BOX, [20, 20, 40, 40])]
    assert both(preds, targets) == 0.0


def test_perfect_submission_scores_one():
    preds = [pred((BOX, 0.9)), pred(), pred(([20, 20, 40, 40], 0.3), (BOX, 0.8))]
    targets = [target(BOX), target(), target(BOX, [20, 20, 40, 40])]
    assert both(preds, targets) == 1.0


def test_false_positive_on_negative_image_scores_zero_for_it():
    preds = [pred((BOX, 0.9)), pred((BOX, 0.1))]
    targets = [target(BOX), target()]
    assert both(preds, targets) == 0.5
    scores, scored = rsna_image_scores(preds, targets)
    assert scores.tolist() == [1.0, 0.0] and scored.tolist() == [True, True]


def test_negative_image_without_predictions_is_not_scored():
    preds = [pred((BOX, 0.9)), pred((HALF, 0.9)), pred()]
    targets = [target(BOX), target(BOX), target()]
    assert both(preds, targets) == pytest.approx((1 + 3 / 8) / 2)
    assert rsna_image_scores(preds, targets)[1].tolist() == [True, True, False]


def test_ground_truth_without_predictions_scores_zero():
    assert both([pred((BOX, 0.9)), pred()], [target(BOX), target(BOX)]) == 0.5


def test_iou_exactly_one_half_hits_three_of_eight_thresholds():
    preds, targets = [pred((HALF, 0.9))], [target(BOX)]
    assert both(preds, targets) == 3 / 8  # 0.40, 0.45, 0.50
    assert both(preds, targets, strict=True) == 2 / 8  # 0.40, 0.45
    assert both(preds, targets, thresholds=(0.5,)) == 1.0
    assert both(preds, targets, strict=True, thresholds=(0.5,)) == 0.0


def test_two_predictions_on_one_box_are_one_hit_and_one_false_positive():
    assert both([pred((BOX, 0.9), (BOX, 0.8))], [target(BOX)]) == 0.5


def test_two_boxes_one_prediction_is_one_hit_and_one_miss():
    assert both([pred((BOX, 0.9))], [target(BOX, [20, 20, 40, 40])]) == 0.5


# g1 and g2 overlap by half. WIDE (IoU 2/3 with both) and EXACT (IoU 1 with g1, 1/3 with g2).
G1, G2 = [0.0, 0.0, 10.0, 10.0], [0.0, 5.0, 10.0, 15.0]
WIDE, EXACT = [0.0, 0.0, 10.0, 15.0], [0.0, 0.0, 10.0, 10.0]
# If WIDE comes first, g1 takes it at 0.40..0.65 and g2 is left without a hit: TP 1, FP 1, FN 1 at
# every threshold (at 0.70, 0.75 g1 takes EXACT instead). If EXACT comes first, both ground-truth
# boxes are hit at 0.40..0.65 (score 1), and 1/3 at 0.70, 0.75.
WIDE_FIRST, EXACT_FIRST = 1 / 3, (6 + 2 / 3) / 8


def test_higher_score_hit_wins_over_a_better_overlapping_lower_score_one():
    targets = [target(G1, G2)]
    assert both([pred((WIDE, 0.9), (EXACT, 0.5))], targets) == pytest.approx(WIDE_FIRST)
    assert both([pred((EXACT, 0.5), (WIDE, 0.9))], targets) == pytest.approx(WIDE_FIRST)
    assert both([pred((WIDE, 0.5), (EXACT, 0.9))], targets) == pytest.approx(EXACT_FIRST)


def test_ground_truth_is_matched_in_file_order():
    preds = [pred((WIDE, 0.9), (EXACT, 0.5))]
    # g2 first: it takes WIDE, and g1 then takes EXACT.
    assert both(preds, [target(G2, G1)]) == pytest.approx(EXACT_FIRST)


def test_score_ties_keep_input_order():
    targets = [target(G1, G2)]
    assert both([pred((WIDE, 0.7), (EXACT, 0.7))], targets) == pytest.approx(WIDE_FIRST)
    assert both([pred((EXACT, 0.7), (WIDE, 0.7))], targets) == pytest.approx(EXACT_FIRST)


def test_multiple_images_are_averaged():
    preds = [pred((BOX, 0.9)), pred((HALF, 0.9)), pred((BOX, 0.2)), pred(), pred((BOX, 0.9), (BOX, 0.8))]
    targets = [target(BOX), target(BOX), target(), target(), target(BOX)]
    assert both(preds, targets) == pytest.approx((1 + 3 / 8 + 0 + 0.5) / 4)


def test_nothing_scored_gives_zero_not_nan():
    assert both([], []) == 0.0
    assert both([pred(), pred()], [target(), target()]) == 0.0


def test_predictions_only_where_there_is_no_ground_truth():
    assert both([pred(), pred((BOX, 0.9))], [target(BOX), target()]) == 0.0


def grid_case(rng: np.random.Generator, max_boxes: int = 10) -> tuple[dict, dict]:
    """One image with coordinates on a 5 px grid (IoUs often land exactly on thresholds, and boxes can
    be empty or repeated) and scores on a 0.25 grid (ties)."""

    def boxes(n: int) -> torch.Tensor:
        xy = rng.integers(0, 8, (n, 2)) * 5
        return torch.tensor(np.concatenate([xy, xy + rng.integers(0, 5, (n, 2)) * 5], 1), dtype=torch.float32)

    gt = boxes(int(rng.integers(0, max_boxes + 1)))
    n_copies = int(rng.integers(0, len(gt) + 1))
    predicted = torch.cat([gt[:n_copies], boxes(int(rng.integers(0, max_boxes - n_copies + 1)))])
    predicted = predicted[torch.from_numpy(rng.permutation(len(predicted)))]
    scores = torch.from_numpy(rng.integers(0, 5, len(predicted)) / 4)
    return {"boxes": predicted, "scores": scores}, {"boxes": gt}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("strict", [False, True])
def test_vectorised_equals_reference_on_random_images(seed: int, strict: bool):
    rng = np.random.default_rng(seed)
    cases = [grid_case(rng) for _ in range(300)]
    preds, targets = [c[0] for c in cases], [c[1] for c in cases]
    assert rsna_map(preds, targets, strict=strict) == pytest.approx(
        rsna_map_reference(preds, targets, strict=strict), abs=1e-6
    )
    # Image by image too, so that errors cannot cancel in the mean.
    scores, scored = rsna_image_scores(preds, targets, strict=strict)
    for i in range(0, 300, 3):
        expected = rsna_map_reference(preds[i : i + 1], targets[i : i + 1], strict=strict)
        assert scores[i].item() == pytest.approx(expected, abs=1e-12)
        assert scored[i].item() == bool(len(preds[i]["boxes"]) or len(targets[i]["boxes"]))


def test_vectorised_equals_reference_on_jittered_detections():
    preds, targets = random_detections(400, max_boxes=10, seed=3)
    assert rsna_map(preds, targets) == pytest.approx(rsna_map_reference(preds, targets), abs=1e-6)


def test_metric_over_two_updates_equals_one_call():
    rng = np.random.default_rng(4)
    cases = [grid_case(rng) for _ in range(60)]
    preds, targets = [c[0] for c in cases], [c[1] for c in cases]
    metric = RSNAMeanAP()
    metric.update(preds[:25], targets[:25])
    metric.update(preds[25:], targets[25:])
    value = metric.compute()
    assert value.dtype == torch.float32 and value.ndim == 0
    assert value.item() == pytest.approx(rsna_map(preds, targets), abs=1e-6)

    metric.reset()
    metric.update([pred()], [target()])
    assert metric.compute().item() == 0.0
    strict = RSNAMeanAP(strict=True)
    strict.update([pred((HALF, 0.9))], [target(BOX)])
    assert strict.compute().item() == 2 / 8
    assert RSNAMeanAP.higher_is_better and not RSNAMeanAP.full_state_update


def test_equivalent_inputs_give_the_same_value():
    tensors = [pred((HALF, 0.9), (BOX, 0.5)), pred()], [target(BOX), target(BOX)]
    expected = rsna_map(*tensors)
    arrays = (
        [{"boxes": np.array([HALF, BOX]), "scores": [0.9, 0.5]}, {"boxes": [], "scores": []}],
        [{"boxes": np.array([BOX])}, {"boxes": [BOX]}],
    )
    assert rsna_map(*arrays) == expected
    integer_and_flat_empty = (
        [{"boxes": torch.tensor([HALF, BOX]).long(), "scores": torch.tensor([0.9, 0.5])}, pred()],
        [target(BOX), target(BOX)],
    )
    integer_and_flat_empty[0][1]["boxes"] = torch.zeros(0)
    assert rsna_map(*integer_and_flat_empty) == expected


@pytest.mark.parametrize(
    ("preds", "targets", "message"),
    [
        ([pred()], [], "preds has 1 images but targets has 0"),
        ([{"boxes": NO_BOXES}], [target()], r"preds\[0\] must be a dict with a 'scores' entry"),
        ([pred(), pred((BOX, 0.9))], [target(), {}], r"targets\[1\] must be a dict with a 'boxes' entry"),
        (
            [pred(), {"boxes": torch.ones(2, 4), "scores": torch.ones(3)}],
            [target()] * 2,
            r"preds\[1\] has 2 boxes but 3",
        ),
        (
            [{"boxes": torch.ones(1, 5), "scores": torch.ones(1)}],
            [target()],
            r"preds\[0\]\['boxes'\] must have shape",
        ),
        (
            [pred(), pred(([5, 0, 1, 10], 0.9))],
            [target()] * 2,
            r"preds\[1\]\['boxes'\] holds \[5.0, 0.0, 1.0, 10.0\]",
        ),
        ([pred()] * 3, [target(), target(), target([0, float("nan"), 1, 1])], r"targets\[2\]\['boxes'\]"),
        (
            [pred(), pred((BOX, 0.5), (BOX, float("inf")))],
            [target()] * 2,
            r"preds\[1\]\['scores'\] must be finite",
        ),
    ],
)
def test_bad_input_is_rejected_naming_the_image(preds, targets, message):
    with pytest.raises((ValueError, KeyError), match=message):
        rsna_map(preds, targets)


@pytest.mark.parametrize("thresholds", [(), (0.0, 0.5), (0.5, 1.5)])
def test_bad_thresholds_are_rejected(thresholds):
    with pytest.raises(ValueError, match="thresholds"):
        rsna_map([pred()], [target()], thresholds=thresholds)
    with pytest.raises(ValueError, match="thresholds"):
        RSNAMeanAP(thresholds=thresholds)


def test_benchmark_reports_agreeing_values_and_restores_threads():
    threads = torch.get_num_threads()
    result = benchmark(n_images=30, repeats=1, num_threads=1)
    assert result["abs_diff"] < 1e-9
    assert result["vectorised_s"] > 0 and result["reference_s"] > 0
    assert torch.get_num_threads() == threads


def test_import_pulls_in_no_training_stack():
    code = (
        "import sys, cxr.metrics; "
        "print([m for m in ('pytorch_lightning', 'lightning', 'hydra', 'pydicom') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
