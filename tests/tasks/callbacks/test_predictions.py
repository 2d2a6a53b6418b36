"""TestPredictions: the run folder keeps one row per test image, and the curves drawn from it agree
with the metrics the task logged."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr.cli.train import run
from cxr.config.compose import compose


def test_a_run_keeps_every_test_images_probability(ped_cxr_dir, tmp_path):
    cfg = compose(
        [
            f"datamodule.data_dir={ped_cxr_dir}",
            "datamodule.image_size=48",
            "datamodule.batch_size=8",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "model=depthwise_cnn",
        ],
        output_dir=tmp_path / "run",
    )
    metrics = run(cfg)
    frame = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    n_test = sum(len(list(d.iterdir())) for d in (ped_cxr_dir / "test").iterdir())
    assert list(frame.columns) == ["index", "label", "probability"]
    assert len(frame) == n_test and frame["index"].is_unique
    assert frame["probability"].between(0, 1).all()
    confusion = json.loads((tmp_path / "run" / "metrics.json").read_text())["test/confusion_matrix"]
    assert frame["label"].value_counts().sort_index().tolist() == [sum(row) for row in confusion]
    assert roc_auc_score(frame["label"] > 0, frame["probability"]) == pytest.approx(
        metrics["test/auroc"], abs=1e-4
    )
