"""The detection path on real RSNA DICOMs and the challenge's own boxes (``rsna_dev``).

The oracle check closes the loop of every box transform: the labels' boxes go through the datamodule
(decode, scale to the network input), come back with :func:`~cxr.data.boxes.to_original`, are
written as a Kaggle submission and read back, and must score exactly 1.0 under the challenge metric;
the same boxes given to the wrong patients must score far lower.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxr.data.boxes import to_original
from cxr.data.rsna import RSNADataModule
from cxr.inference.submission import read_submission, write_submission
from cxr.metrics import rsna_map

SIZE = 256


@pytest.fixture(scope="module")
def datamodule(rsna_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> RSNADataModule:
    dm = RSNADataModule(rsna_dev, image_size=SIZE, batch_size=4, cache_dir=tmp_path_factory.mktemp("cache"))
    dm.setup("fit")
    return dm


def _truth(rsna_dev: Path) -> dict[str, np.ndarray]:
    labels = pd.read_csv(rsna_dev / "stage_2_train_labels.csv")
    truth: dict[str, list] = {pid: [] for pid in labels["patientId"]}
    for row in labels[labels["Target"] == 1].itertuples():
        truth[row.patientId].append([row.x, row.y, row.x + row.width, row.y + row.height])
    return {pid: np.asarray(b, np.float32).reshape(-1, 4) for pid, b in truth.items()}


def _round_trip(datamodule: RSNADataModule) -> dict[str, dict]:
    """Every labelled image's boxes: dataset (S×S pixels, no augmentation) -> original pixels."""
    out = {}
    for dataset in (datamodule.train_set, datamodule.val_set):
        dataset.transform = datamodule.eval_transform
        for i in range(len(dataset)):
            sample = dataset[i]
            boxes = to_original(sample["boxes"], sample["orig_size"].tolist(), SIZE)
            out[sample["patient_id"]] = {"boxes": boxes, "scores": torch.ones(len(boxes))}
    return out


def test_real_dicoms_decode_with_boxes_scaled_to_the_input(datamodule, rsna_dev):
    truth = _truth(rsna_dev)
    sample = next(
        s for s in map(datamodule.val_set.__getitem__, range(len(datamodule.val_set))) if len(s["boxes"])
    )
    assert sample["image"].shape == (1, SIZE, SIZE) and sample["image"].dtype == torch.float32
    assert sample["orig_size"].tolist() == [1024, 1024]
    expected = truth[sample["patient_id"]] * SIZE / 1024
    assert np.allclose(np.sort(sample["boxes"].numpy(), axis=0), np.sort(expected, axis=0), atol=1e-3)
    assert len(datamodule.train_set) + len(datamodule.val_set) == len(truth) == 209


def test_oracle_boxes_round_trip_through_a_submission_score_one(datamodule, rsna_dev, tmp_path):
    truth = _truth(rsna_dev)
    predictions = _round_trip(datamodule)
    assert set(predictions) == set(truth)
    path = write_submission(predictions, tmp_path / "submission.csv")
    read = read_submission(path)
    ids = sorted(truth)
    targets = [{"boxes": torch.from_numpy(truth[i])} for i in ids]
    preds = [{k: torch.as_tensor(v) for k, v in read[i].items()} for i in ids]
    assert rsna_map(preds, targets) == pytest.approx(1.0, abs=1e-9)

    positives = [i for i in ids if len(truth[i])]
    shuffled = dict(zip(positives, positives[1:] + positives[:1], strict=True))  # boxes of the next patient
    wrong = [{k: torch.as_tensor(v) for k, v in read[shuffled.get(i, i)].items()} for i in ids]
    assert rsna_map(wrong, targets) < 0.2  # 0.058 measured: only images whose boxes happen to overlap score


@pytest.mark.slow
def test_the_whole_detection_path_runs_on_real_dicoms(rsna_dev, tmp_path, one_thread):
    """cxr-train (a few steps, a tiny encoder), cxr-tune, cxr-predict and the Kaggle submission on
    real DICOMs; the predictions' boxes lie inside the 1024-px originals; the picture is drawn."""
    from cxr.cli.predict import main as predict
    from cxr.cli.train import run
    from cxr.cli.tune import main as tune
    from cxr.config.compose import compose
    from cxr.reporting.detection_plots import detection_grid

    cache = tmp_path / "cache"
    cfg = compose(
        [
            "experiment=gabruseva2020",
            f"datamodule.data_dir={rsna_dev}",
            "datamodule.image_size=128",
            "datamodule.batch_size=4",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={cache}",
            "model.encoder=resnet18",
            "model.fpn_channels=32",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3",
            "trainer.enable_progress_bar=false",
        ],
        output_dir=tmp_path / "run",
    )
    metrics = run(cfg)
    assert 0.0 <= metrics["test/rsna_map"] <= 1.0
    ckpt = sorted((tmp_path / "run" / "checkpoints").glob("epoch*.ckpt"))[-1]
    tune(["--ckpt", str(ckpt), "--data-dir", str(rsna_dev), "--cache-dir", str(cache), "--num-workers", "0"])
    assert (ckpt.parent / "postprocess.json").is_file()
    images = sorted((rsna_dev / "stage_2_train_images").glob("*.dcm"))[:6]
    predict(["--ckpt", str(ckpt), "--input", *map(str, images), "--out", str(tmp_path / "out")])
    submission = read_submission(tmp_path / "out" / "submission.csv")
    assert sorted(submission) == sorted(p.stem for p in images)
    for pred in submission.values():
        assert ((pred["boxes"] >= 0) & (pred["boxes"] <= 1024)).all()
    picture = detection_grid(ckpt, rsna_dev, tmp_path / "grid.png", "rsna_dev", n=4, cache_dir=cache)
    assert picture.stat().st_size > 10_000
