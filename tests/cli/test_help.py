"""Every command has --help; the Hydra apps run from their console entry, keys and all."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from PIL import Image

# the console scripts as installed (pip install -e . after editing pyproject.toml)
SCRIPTS = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("cxr-")}
HYDRA_APPS = {"cxr-train", "cxr-augment-grid"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _entry(name: str):
    module, _, function = SCRIPTS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def test_every_command_is_installed() -> None:
    assert set(SCRIPTS) >= {"cxr-predict", "cxr-tune", "cxr-export", "cxr-models", *HYDRA_APPS}
    assert all(value.startswith("cxr.cli.") for value in SCRIPTS.values()), SCRIPTS


@pytest.mark.parametrize("name", sorted(set(SCRIPTS) - HYDRA_APPS))
def test_every_argparse_command_has_help_with_its_defaults(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        _entry(name)(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {name}") and "--help" in text


def test_the_demo_has_help(capsys) -> None:
    from cxr.cli.demo import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "(default: 400)" in capsys.readouterr().out


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from cxr.cli.augment_grid import main; sys.argv = ['cxr-augment-grid', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )


def test_augment_grid_is_a_hydra_app_with_out_rows_and_cols_as_config_keys(
    rsna_dir: Path, tmp_path: Path
) -> None:
    helped = _run(["--help"], tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("cxr-augment-grid is powered by Hydra")
    assert "out: augment_grid.png" in helped.stdout and "rows: 4" in helped.stdout
    bad = _run(["rows=abc"], tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == (
        "cxr-augment-grid: error: rows=abc: use a whole number >= 1"
    )
    done = _run(
        [
            "datamodule=rsna",
            f"datamodule.data_dir={rsna_dir}",
            "datamodule.image_size=48",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            f"out={tmp_path / 'grid.png'}",
            "rows=1",
            "cols=2",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(tmp_path / "grid.png").size[0] > 2 * Image.open(tmp_path / "grid.png").size[1]


def test_cxr_train_help_is_hydras(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cxr.cli.train", "--help"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "== Configuration groups ==" in done.stdout
