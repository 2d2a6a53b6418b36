"""cxr-predict drops no work silently (issue 14, items 6 and 10): bad arguments are one-line errors
before anything is read; every input named or found gets a row (dangling links, FIFOs, links out of
the folder included, with their error) and is counted; an output path that cannot be a folder is
refused before any image is decoded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxr.cli.predict import main as predict
from cxr.models import create_model
from cxr.tasks.checkpoint_format import FORMAT_VERSION

KWARGS = {"widths": [8, 8], "hidden": 8, "drop_rate": 0.0, "head": "avgpool"}  # avgpool: any input size


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("depthwise_cnn", **KWARGS)
    path = tmp_path / "clf.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "epoch": 0,
            "hyper_parameters": {"threshold": 0.5},
            "cxr": {
                "format_version": FORMAT_VERSION,
                "model_name": "depthwise_cnn",
                "model_kwargs": KWARGS,
                "datamodule": {"image_size": 32, "labels": "binary"},
                "task": "ClassificationTask",
            },
        },
        path,
    )
    return path


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)).save(path)
    return path


def _last_error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_batch_size_below_one_is_a_one_line_error(tmp_path, ckpt, capsys, value):
    _image(tmp_path / "in" / "a.png")
    with pytest.raises(SystemExit) as info:
        predict(
            [
                "--ckpt",
                str(ckpt),
                "--input",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "out"),
                "--batch-size",
                value,
            ]
        )
    assert info.value.code == 2
    assert _last_error_line(capsys) == f"cxr-predict: error: argument --batch-size: must be >= 1, got {value}"
    assert not (tmp_path / "out").exists()
    from cxr.inference.predict import predict as predict_api

    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        predict_api([ckpt], [tmp_path / "in"], tmp_path / "out", batch_size=int(value))
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_dangling_links_and_fifos_get_a_row_with_their_error_and_are_counted(tmp_path, ckpt, caplog):
    folder = tmp_path / "in"
    good = [_image(folder / "a.png"), _image(folder / "sub" / "b.jpeg")]
    (folder / "gone.jpeg").symlink_to(tmp_path / "deleted.jpeg")
    os.mkfifo(folder / "pipe.jpeg")
    named = tmp_path / "named_gone.png"
    named.symlink_to(tmp_path / "nowhere.png")
    caplog.set_level(logging.WARNING)
    predict(["--ckpt", str(ckpt), "--input", str(folder), str(named), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    rows = dict(zip(table["file"], table["error"], strict=True))
    assert sorted(rows) == sorted(map(str, [*good, folder / "gone.jpeg", folder / "pipe.jpeg", named]))
    assert (
        rows[str(folder / "gone.jpeg")]
        == f"{folder / 'gone.jpeg'}: dangling symbolic link (to {tmp_path / 'deleted.jpeg'})"
    )
    assert rows[str(named)].startswith(f"{named}: dangling symbolic link")
    assert (
        rows[str(folder / "pipe.jpeg")]
        == f"{folder / 'pipe.jpeg'}: not a regular file but a FIFO (named pipe); not read"
    )
    assert all(rows[str(p)] == "" for p in good)
    assert "3 of 5 file(s) could not be read or were refused" in caplog.text


def test_a_folder_input_follows_no_symbolic_link_out_of_the_folder(tmp_path, ckpt, caplog):
    folder = tmp_path / "in"
    inside = _image(folder / "a.png")
    secret = _image(tmp_path / "elsewhere" / "secret.png")
    (folder / "link.png").symlink_to(secret)  # a file outside the folder
    (folder / "alias.png").symlink_to(inside)  # a file inside: fine
    (folder / "dir").symlink_to(secret.parent, target_is_directory=True)  # a folder outside: not searched
    caplog.set_level(logging.WARNING)
    predict(["--ckpt", str(ckpt), "--input", str(folder), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    rows = dict(zip(table["file"], table["error"], strict=True))
    assert sorted(rows) == sorted(map(str, [inside, folder / "alias.png", folder / "link.png"]))
    assert rows[str(folder / "link.png")] == (
        f"{folder / 'link.png'}: symbolic link to {secret}, outside {folder}; not followed"
    )
    assert rows[str(folder / "alias.png")] == "" and table["probability"].ne("").sum() == 2
    assert "1 symbolic link(s) lead outside the folder" in caplog.text
    assert f"{folder / 'dir'}: symbolic link to a folder" in caplog.text


def test_an_output_path_that_cannot_be_a_folder_is_refused_first(tmp_path, ckpt, capsys, monkeypatch):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "file.csv").write_text("x")
    decoded = []
    monkeypatch.setattr("cxr.inference.predict.read_input", lambda *a, **k: decoded.append(a))
    for out, message in (
        (tmp_path / "file.csv", f"--out {tmp_path / 'file.csv'}: is an existing file, not a folder"),
        (
            tmp_path / "file.csv" / "sub",
            f"--out {tmp_path / 'file.csv' / 'sub'}: {tmp_path / 'file.csv'} is a file",
        ),
    ):
        with pytest.raises(SystemExit) as info:
            predict(["--ckpt", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(out)])
        assert str(info.value.code).startswith(f"cxr-predict: error: {message}")
        assert "\n" not in str(info.value.code)
    assert (tmp_path / "file.csv").read_text() == "x" and not decoded
