"""The test split's per-image predictions, kept in the run folder for ROC and precision-recall curves.

:class:`TestPredictions` writes ``<dirpath>/test_predictions.csv`` with one row per test image:
``index`` (the dataset index), ``label`` (the integer class, 0 = normal) and ``probability`` (of
pneumonia). It records whatever ``test_step`` returns with those keys (ClassificationTask does;
tasks that return nothing leave no file).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from cxr.files import write_text_atomic

FILENAME = "test_predictions.csv"
COLUMNS = ("index", "label", "probability")


class TestPredictions(pl.Callback):
    """Collect ``index``, ``label`` and ``probability`` from every test batch; write them at test end."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self._rows: dict[str, list[torch.Tensor]] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = {c: [] for c in COLUMNS}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, dict) and all(c in outputs for c in COLUMNS):
            for c in COLUMNS:
                self._rows[c].append(outputs[c].detach().reshape(-1).float().cpu())

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import pandas as pd

        if not self._rows.get("index") or not trainer.is_global_zero:
            return
        frame = pd.DataFrame({c: torch.cat(self._rows[c]).numpy() for c in COLUMNS})
        frame[["index", "label"]] = frame[["index", "label"]].astype(int)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        text = frame.sort_values("index").to_csv(index=False, float_format="%.6g")
        write_text_atomic(self.dirpath / FILENAME, text)
