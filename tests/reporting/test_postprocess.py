"""The post-processing sweep of ``cxr-reproduce`` (Gabruseva et al.'s Fig. 8 and post-processing table)
on run folders built by hand: checkpoints of untrained detectors, logs written directly (fast)."""

import logging

import pandas as pd
import pytest
import torch

from cxr.models import create_model
from cxr.reporting.plots import nms_curves, nms_figure
from cxr.reporting.reproduce.plan import Job
from cxr.reporting.reproduce.postprocess import (
    COARSE_SCORES,
    NMS_GRID,
    best_epochs,
    kept_checkpoints,
    postprocess_sweep,
)
from cxr.reporting.tables import postprocess_table
from tests.inference.test_predict import save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers", "ignore:.*LeafSpec")

DETECTOR = {"encoder": "test_resnet", "image_size": 64, "fpn_channels": 16, "small_anchors": False}
HPARAMS = {"score_thresholds": [0.1, 0.2], "relative_score_thresh": 0.5}


def _log(run, logged):
    (run / "csv").mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": e, "step": e, "val/rsna_map": v} for e, v in enumerate(logged)]
    pd.DataFrame(rows).to_csv(run / "csv" / "metrics.csv", index=False)


def _run(runs_dir, run_id, logged, checkpoints=True):
    """A finished run folder: ``metrics.json``, ``csv/metrics.csv`` with ``logged`` val/rsna_map per
    epoch and one checkpoint per epoch (an untrained RetinaNet, seeded by run and epoch)."""
    run = runs_dir / run_id
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    _log(run, logged)
    for epoch in range(len(logged)):
        path = run / "checkpoints" / f"epoch{epoch:03d}.ckpt"
        if not checkpoints:
            path.write_bytes(b"")
            continue
        torch.manual_seed(epoch + 100 * len(run_id))
        save_checkpoint(
            path,
            create_model("retinanet", **DETECTOR),
            "retinanet",
            {**DETECTOR, "score_thresh": 0.05, "nms_thresh": 0.05},
            {"image_size": 64, "batch_size": 8, "fold": 0},
            "DetectionTask",
            hparams=HPARAMS,
            epoch=epoch,
        )
    return run


def test_best_epochs_follow_the_logged_validation_score(tmp_path, caplog):
    run = _run(tmp_path, "a", [0.1, 0.3, 0.2, 0.3], checkpoints=False)
    assert list(kept_checkpoints(run)) == [0, 1, 2, 3]
    assert best_epochs(run, 3) == [1, 3, 2]  # ties: the earlier epoch first
    (run / "checkpoints" / "epoch001.ckpt").unlink()  # only kept checkpoints can be chosen
    assert best_epochs(run) == [3]
    (run / "csv" / "metrics.csv").unlink()
    with caplog.at_level(logging.WARNING):
        assert best_epochs(run, 2) == [3, 2]  # no log: the last kept epochs
    assert "no logged val/rsna_map" in caplog.text


def test_sweep_scores_the_chosen_epochs_and_tables_the_best_logged_one(rsna_dir, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    _run(runs_dir, "single", [0.1, 0.3, 0.2, 0.0, 0.05])
    _run(runs_dir, "other", [0.5, 0.1])
    jobs = [Job("t", "one", (), (), "0", run_id="single"), Job("t", "two", (), (), "0", run_id="other")]
    args = (jobs, runs_dir, rsna_dir, "one", tmp_path / "cache")

    sweep = postprocess_sweep(*args, epoch_step=4, top_k=2)
    single = sweep[sweep["setting"] == "single model (one)"]
    # every 4th epoch (0, 4), the last (4) and the two best logged (1, 2); epoch 3 is not scored
    assert sorted(single["epoch"].unique()) == [0, 1, 2, 4]
    scores = len(HPARAMS["score_thresholds"]) + len(COARSE_SCORES)  # the validation's own and more
    assert (single.groupby("epoch").size() == len(NMS_GRID) * scores).all()
    assert set(single.loc[single["in_table"], "epoch"]) == {1}
    assert sweep["rsna_map"].between(0, 1).all()

    numbers, _ = postprocess_table(sweep)
    assert list(numbers["setting"]) == [
        "single model (one)",
        "single model (one) + box shrink 0.875",
        "checkpoint ensemble: one, its 2 best epochs",
        "checkpoint ensemble: one, its 2 best epochs + box shrink 0.875",
        "ensemble of 2 models (one per augmentation)",
        "ensemble of 2 models (one per augmentation) + box shrink 0.875",
    ]
    assert list(numbers["epoch per fold"]) == ["1", "1", "—", "—", "—", "—"]

    def no_prediction(*_, **__):
        raise AssertionError("the cached sweep should be reused")

    monkeypatch.setattr("cxr.inference.tune.detection_predictions", no_prediction)
    pd.testing.assert_frame_equal(postprocess_sweep(*args, epoch_step=4, top_k=2), sweep)
    monkeypatch.undo()

    _log(runs_dir / "single", [0.1, 0.3, 0.2, 0.9, 0.05])  # retrained: a new log is a new cache entry
    again = postprocess_sweep(*args, epoch_step=4, top_k=2)
    assert set(again.loc[again["in_table"] & again["epoch"].notna(), "epoch"]) == {3}
    assert len(list(runs_dir.glob("postprocess-*.csv"))) == 2


def _sweep(epochs=(0, 1, 2), folds=(0, 1)):
    rows = [
        (f, "single", e, e == 1, n, s, 0.1 * e + 0.1 * n - s)
        for f in folds
        for e in epochs
        for n in (0.0, 0.5, 1.0)
        for s in (0.1, 0.2)
    ]
    rows += [(f, "ensemble", None, True, n, 0.1, 0.3) for f in folds for n in (0.0, 0.5, 1.0)]
    frame = pd.DataFrame(
        rows, columns=["fold", "setting", "epoch", "in_table", "nms_thresh", "score_thresh", "rsna_map"]
    )
    return frame.astype({"epoch": "Int64"})


def test_fig8_draws_one_line_per_epoch_and_the_table_settings_beside(tmp_path):
    fig = nms_figure(_sweep(), "Fig. 8")
    by_epoch, table = fig.axes[:2]
    assert [t.get_text() for t in by_epoch.get_legend().get_texts()] == ["epoch 0", "epoch 1", "epoch 2"]
    assert by_epoch.lines[2].get_ydata().tolist() == pytest.approx([0.1, 0.15, 0.2])  # best score thresh
    assert [t.get_text() for t in table.get_legend().get_texts()] == ["single", "ensemble"]
    assert nms_curves(_sweep(), tmp_path / "f8.png", "Fig. 8").stat().st_size > 1000


def test_fig8_leaves_out_epochs_not_scored_on_every_fold():
    sweep = pd.concat([_sweep(), _sweep(epochs=(5,), folds=(0,))])
    labels = [t.get_text() for t in nms_figure(sweep, "Fig. 8").axes[0].get_legend().get_texts()]
    assert labels == ["epoch 0", "epoch 1", "epoch 2"]


def test_one_checkpoint_is_post_processed_as_the_validation_scores_it(tmp_path):
    """Raw detections + the sweep's NMS at the model's IoU + the relative filter = the model's own
    prefilter and NMS + the relative filter, box for box and score for score."""
    from cxr.inference.members import detect, load_member
    from cxr.reporting.reproduce.postprocess import postprocessed
    from cxr.tasks.detection import relative_filter

    run = _run(tmp_path, "a", [0.1])
    member = load_member(run / "checkpoints" / "epoch000.ckpt")
    head = member.model.head.classification_head
    with torch.no_grad():  # unequal scores by anchor shape and place (untrained, they are all ~0.01)
        head.cls_logits.bias.copy_(torch.linspace(-3, 1, len(head.cls_logits.bias)))
        for conv in head.modules():
            if isinstance(conv, torch.nn.Conv2d) and conv is not head.cls_logits:
                conv.weight.mul_(30)
    member.model.detections_per_img = 1000
    torch.manual_seed(0)
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        own = relative_filter(member.model(images), HPARAMS["relative_score_thresh"])
    raw, _ = detect(member, images, [(64, 64)] * 3, raw_detections=1000)
    swept = postprocessed([[r] for r in raw], 0.05, HPARAMS["relative_score_thresh"])
    with torch.no_grad():
        unfiltered = member.model(images)
    assert sum(map(len, [d["scores"] for d in own])) > 6  # several boxes per image survive,
    # the relative filter drops some
    assert sum(map(len, [d["scores"] for d in unfiltered])) > sum(map(len, [d["scores"] for d in own]))
    for mine, theirs in zip(swept, own, strict=True):
        order = theirs["scores"].argsort(descending=True, stable=True)
        assert torch.allclose(mine["scores"], theirs["scores"][order])
        assert torch.allclose(mine["boxes"], theirs["boxes"][order], atol=1e-4)
