"""``cxr-synth ped-cxr``: writes the tree, prints one summary line, turns bad arguments into usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cxr.cli.synth import main


def test_ped_cxr_writes_the_tree_and_one_summary_line(tmp_path, capsys):
    out = tmp_path / "chest_xray"
    main(["ped-cxr", str(out), "--n", "24", "--seed", "2", "--min-side", "32", "--max-side", "48"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    files = sorted(out.rglob("*.jpeg"))
    assert len(files) == 24
    n_val_normal = sum(1 for _ in (out / "val" / "NORMAL").glob("*.jpeg"))
    assert f"wrote 24 images to {out}" in lines[0] and f"val 4 ({n_val_normal} NORMAL" in lines[0]


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ped-cxr", str(tmp_path / "x"), "--n", "3"])
    assert exit_info.value.code == 2 and "n=3 is too small" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-dataset", str(tmp_path)])


def test_runs_as_a_module(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxr.cli.synth",
            "ped-cxr",
            str(tmp_path / "d"),
            "--n",
            "20",
            "--min-side",
            "24",
            "--max-side",
            "32",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ped-cxr: wrote 20 images" in result.stdout
