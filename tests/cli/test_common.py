"""What the argparse commands share: value types, help with defaults, globs, one-line errors."""

import argparse

import pytest

from cxr.cli.common import HelpFormatter, exit_on_error, expand, positive_int, probability


def _parser():
    parser = argparse.ArgumentParser(prog="cxr-x", formatter_class=HelpFormatter)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    parser.add_argument("--threshold", type=probability, help="a probability")
    parser.add_argument("--overlays", action="store_true", help="draw")
    return parser


def test_help_shows_defaults_except_none_and_off_flags():
    text = " ".join(_parser().format_help().split())
    assert "images per batch (default: 8)" in text
    assert "a probability (default" not in text and "draw (default" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "-1"], "argument --batch-size: must be >= 1, got -1"),
        (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["--batch-size", "x"], "argument --batch-size: invalid positive_int value: 'x'"),
        (["--threshold", "1.5"], r"argument --threshold: must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_values_are_one_line_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("cxr-x: error: ")
    assert __import__("re").search(message, last)


def test_expand_sorts_glob_matches_and_keeps_patterns_without_any(tmp_path):
    for name in ("b.ckpt", "a.ckpt"):
        (tmp_path / name).touch()
    assert expand([str(tmp_path / "*.ckpt")]) == [tmp_path / "a.ckpt", tmp_path / "b.ckpt"]
    assert expand([str(tmp_path / "none*.ckpt")]) == [tmp_path / "none*.ckpt"]


def test_expand_with_a_suffix_keeps_only_checkpoints_from_a_wildcard(tmp_path):
    for name in ("a.ckpt", "a.ckpt.onnx", "postprocess.json"):
        (tmp_path / name).touch()
    assert expand([str(tmp_path / "*")], suffix=".ckpt") == [tmp_path / "a.ckpt"]
    assert expand([str(tmp_path / "postprocess.json")], suffix=".ckpt") == [tmp_path / "postprocess.json"]


def test_exit_on_error_gives_one_line_for_file_and_value_errors_only():
    with pytest.raises(SystemExit, match=r"^cxr-x: error: no such file$"):
        with exit_on_error("cxr-x"):
            raise FileNotFoundError("no such file")
    with pytest.raises(SystemExit, match=r"^cxr-x: error: bad value on two lines$"):
        with exit_on_error("cxr-x"):
            raise ValueError("bad value\non two lines")
    with pytest.raises(KeyError):
        with exit_on_error("cxr-x"):
            raise KeyError("a bug, not a user error")
