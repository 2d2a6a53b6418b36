"""Figures from CSV logs and NMS sweeps: per-epoch averaging and PNG files."""

import pandas as pd
import pytest

from cxr.reporting.plots import mean_curves, nms_curves, read_log, training_curves


def _log(folder, val_losses, train_losses):
    (folder / "csv").mkdir(parents=True)
    rows = []
    for epoch, (v, t) in enumerate(zip(val_losses, train_losses, strict=True)):
        rows.append({"epoch": epoch, "step": 10 * epoch, "val/loss": v})  # Lightning: one line per call
        rows.append({"epoch": epoch, "step": 10 * epoch, "train/loss_epoch": t})
    rows.append({"epoch": None, "step": 0, "lr-Adam": 1e-3})
    pd.DataFrame(rows).to_csv(folder / "csv" / "metrics.csv", index=False)
    return folder


def test_logs_merge_per_epoch_and_average_over_runs(tmp_path):
    a = read_log(_log(tmp_path / "a", [1.0, 0.6], [1.2, 0.8]))
    b = read_log(_log(tmp_path / "b", [0.8, 0.4, 0.3], [1.0, 0.6, 0.5]))
    assert list(a.index) == [0, 1] and a.loc[1, "val/loss"] == 0.6 and a.loc[1, "train/loss_epoch"] == 0.8
    curve = mean_curves([a, b], "val/loss")
    assert curve["mean"].tolist() == pytest.approx([0.9, 0.5, 0.3])
    assert curve["std"].tolist()[:2] == pytest.approx([2**0.5 * 0.1, 2**0.5 * 0.1])
    assert read_log(tmp_path / "none") is None


def test_figures_are_written(tmp_path):
    runs = {"x": [_log(tmp_path / "a", [1.0, 0.6], [1.2, 0.8]), tmp_path / "missing"], "y": []}
    path = training_curves(runs, [("loss", "train/loss_epoch", "val/loss")], tmp_path / "c.png", "T")
    assert path.stat().st_size > 1000
    assert (
        training_curves({"x": [tmp_path / "missing"]}, [("loss", None, "val/loss")], tmp_path / "d.png", "T")
        is None
    )
    sweep = pd.DataFrame(
        [(f, s, n, 0.3, 0.1 * n + f) for f in (0, 1) for s in ("one", "two") for n in (0.0, 0.5)],
        columns=["fold", "setting", "nms_thresh", "score_thresh", "rsna_map"],
    )
    assert nms_curves(sweep, tmp_path / "f8.png", "Fig. 8").stat().st_size > 1000
    assert nms_curves(sweep.iloc[:0], tmp_path / "none.png", "Fig. 8") is None


def _classification_run(folder, labels, probabilities, confusion):
    import json

    import pandas as pd

    folder.mkdir(parents=True)
    pd.DataFrame({"index": range(len(labels)), "label": labels, "probability": probabilities}).to_csv(
        folder / "test_predictions.csv", index=False
    )
    (folder / "metrics.json").write_text(json.dumps({"test/confusion_matrix": confusion}))
    return folder


def test_classification_figure_draws_curves_and_matrices_and_skips_missing_runs(tmp_path):
    from PIL import Image

    from cxr.reporting.classification_plots import classification_figure

    good = _classification_run(tmp_path / "a", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [[2, 0], [1, 1]])
    runs = {"row a": [good, tmp_path / "missing"], "row b": [None]}
    path = classification_figure(runs, tmp_path / "fig.png", "title")
    width, height = Image.open(path).size
    assert width > 500 and height > 500  # the curves above, a matrix per row below
    assert classification_figure({"row b": [tmp_path / "missing"]}, tmp_path / "none.png", "t") is None
    assert not (tmp_path / "none.png").exists()
