"""A CSV logger whose log survives a resumed run.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts writing into a folder
that has one (it warns "Previous log files in this directory will be deleted"). ``cxr-train``
resumes an interrupted run in its own folder, so the epochs before the interruption would vanish
from the log and from every curve drawn from it. :class:`CSVLogger` keeps them instead.
"""

from __future__ import annotations

import csv
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    """Keeps the rows of an existing ``metrics.csv`` that come before the first step logged now.

    A resumed run replays from its checkpoint, so rows at or after the first step it logs belong to
    the interrupted stretch it is about to log again (or, for a run started afresh at step 0, to the
    run it replaces): those are dropped, the earlier ones kept, once, at that first log call.
    """

    def _check_log_dir_exists(self) -> None:  # Lightning deletes metrics.csv here
        self._pending: list[dict[str, str]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self._pending = list(csv.DictReader(file))

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        if self._pending is not None:
            first = len(self.metrics) if step is None else step
            kept = [row for row in self._pending if row.get("step") and float(row["step"]) < first]
            self._pending = None
            if kept:
                keys = sorted(set().union(*kept))
                with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                    writer = csv.DictWriter(file, fieldnames=keys)
                    writer.writeheader()
                    writer.writerows(kept)
                self.metrics_keys = keys
            else:
                self._fs.rm_file(self.metrics_file_path)
        super().log_metrics(metrics_dict, step)


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` (same arguments, ``<save_dir>/<name>/<version>/metrics.csv``) that
    continues an existing ``metrics.csv`` instead of deleting it: rows logged before the step a
    resumed run restarts from are kept, the rest are logged again by the resumed run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
