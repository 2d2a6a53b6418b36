"""Helpers for tests of the RSNA readers: the session dataset's CSVs, and copies of it with edited CSVs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def _variant(
    rsna_dir: Path, tmp_path: Path, labels: pd.DataFrame | None = None, classes: pd.DataFrame | None = None
) -> Path:
    """A copy of the session dataset with edited CSVs; image folders are symlinked, not copied."""
    root = tmp_path / "rsna"
    root.mkdir(parents=True)
    for sub in ("stage_2_train_images", "stage_2_test_images"):
        (root / sub).symlink_to(rsna_dir / sub, target_is_directory=True)
    (labels if labels is not None else _csv(rsna_dir, "labels")).to_csv(
        root / "stage_2_train_labels.csv", index=False
    )
    (classes if classes is not None else _csv(rsna_dir, "classes")).to_csv(
        root / "stage_2_detailed_class_info.csv", index=False
    )
    return root


def _csv(root: Path, which: str) -> pd.DataFrame:
    name = "stage_2_train_labels.csv" if which == "labels" else "stage_2_detailed_class_info.csv"
    return pd.read_csv(root / name)


@pytest.fixture
def rsna_csv():
    """``rsna_csv(root, "labels" | "classes")``: one of the challenge CSVs of ``root`` as a DataFrame."""
    return _csv


@pytest.fixture
def rsna_variant():
    """``rsna_variant(rsna_dir, tmp_path, labels=None, classes=None)``: :func:`_variant`."""
    return _variant
