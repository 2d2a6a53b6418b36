"""Kaggle submission files: round trip and malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxr.inference.submission import read_submission, write_submission


def test_submission_round_trip(tmp_path: Path) -> None:
    preds = {
        "a": {
            "boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [100.5, 0.0, 300.25, 512.0]]),
            "scores": torch.tensor([0.3, 0.9]),
        },
        "b": {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)},
    }
    path = write_submission(preds, tmp_path / "sub.csv")
    text = path.read_text().splitlines()
    assert text[0] == "patientId,PredictionString"
    assert text[1] == "a,0.9000 100.5 0.0 199.8 512.0 0.3000 10.0 20.0 30.0 40.0"  # by descending score
    assert text[2] == "b,"
    back = read_submission(path)
    assert list(back) == ["a", "b"] and back["b"]["boxes"].shape == (0, 4)
    np.testing.assert_allclose(back["a"]["scores"], [0.9, 0.3], atol=1e-4)
    np.testing.assert_allclose(back["a"]["boxes"], preds["a"]["boxes"][[1, 0]].numpy(), atol=0.06)


def test_submission_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a: need finite boxes"):
        write_submission({"a": {"boxes": np.zeros((2, 4)), "scores": np.zeros(1)}}, tmp_path / "s.csv")
    (tmp_path / "bad.csv").write_text("patientId,PredictionString\na,0.5 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*a has 4 numbers"):
        read_submission(tmp_path / "bad.csv")
    (tmp_path / "words.csv").write_text("patientId,PredictionString\nb,0.5 1 2 3 x\n")
    with pytest.raises(ValueError, match=r"words\.csv: PredictionString of b is not numbers: '0.5 1 2 3 x'"):
        read_submission(tmp_path / "words.csv")
