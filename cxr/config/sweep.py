"""Hydra callback that gathers the ``metrics.json`` of every job of a multirun into ``summary.csv``."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def collect_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder under ``sweep_dir``: its overrides, then its scalar metrics."""
    rows = []
    for metrics_file in sorted(Path(sweep_dir).glob("*/metrics.json"), key=lambda p: p.parent.name):
        job_dir = metrics_file.parent
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = overrides_file.read_text().splitlines() if overrides_file.exists() else []
        row: dict[str, Any] = {
            "job": job_dir.name,
            "overrides": " ".join(o.removeprefix("- ").strip() for o in overrides),
        }
        metrics = json.loads(metrics_file.read_text())
        row.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        rows.append(row)
    return rows


def write_summary(sweep_dir: str | Path) -> Path | None:
    rows = collect_runs(sweep_dir)
    if not rows:
        return None
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = Path(sweep_dir) / "summary.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return out


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        out = write_summary(config.hydra.sweep.dir)
        if out is not None:
            log.info("sweep summary: %s", out)
