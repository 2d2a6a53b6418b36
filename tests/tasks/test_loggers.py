"""The CSV logger continues an existing log: a resumed run keeps the rows before its restart step."""

import pandas as pd

from cxr.tasks.loggers import CSVLogger


def _log(save_dir, rows):
    logger = CSVLogger(save_dir, name="csv", version="")
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
        logger.save()
    return pd.read_csv(save_dir / "csv" / "metrics.csv")


def test_resumed_run_keeps_earlier_rows_and_relogs_the_rest(tmp_path):
    _log(tmp_path, [(0, {"train/loss": 1.0}), (5, {"val/loss": 0.9, "epoch": 0}), (7, {"train/loss": 0.8})])
    # resumed from a checkpoint at step 6: the row at step 7 is logged again, with what the resumed run computes
    log = _log(tmp_path, [(7, {"train/loss": 0.7}), (11, {"val/loss": 0.6, "epoch": 1, "val/auroc": 0.9})])
    assert log["step"].tolist() == [0, 5, 7, 11]
    assert log["train/loss"].tolist()[::2] == [1.0, 0.7] and log["val/loss"].dropna().tolist() == [0.9, 0.6]
    assert log["val/auroc"].dropna().tolist() == [0.9]  # a new column: the header grows, old rows stay


def test_a_run_started_afresh_replaces_the_old_log(tmp_path):
    _log(tmp_path, [(0, {"train/loss": 1.0}), (3, {"train/loss": 0.5})])
    log = _log(tmp_path, [(0, {"train/loss": 2.0})])
    assert log["step"].tolist() == [0] and log["train/loss"].tolist() == [2.0]
