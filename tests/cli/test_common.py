"""key=value command lines: parsing, required keys, one-line errors."""

import logging

import pytest

from cxr.cli.common import exit_on_error, parse_command


def test_parse_command_converts_requires_and_turns_on_info_logging(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # basicConfig configures only a root without handlers
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    args = parse_command(
        ["n=3", "ckpt=a", "ckpt=b"],
        "cxr-x",
        "usage",
        {"n": int, "ckpt": str},
        required=("ckpt",),
        repeated=("ckpt",),
    )
    assert args == {"n": 3, "ckpt": ["a", "b"]}
    assert root.level == logging.INFO and root.handlers
    with pytest.raises(SystemExit, match=r"^cxr-x: error: missing ckpt=\.\.\."):
        parse_command(
            ["n=3"], "cxr-x", "usage", {"n": int, "ckpt": str}, required=("ckpt",), repeated=("ckpt",)
        )


def test_parse_command_reads_sys_argv_when_not_given(monkeypatch):
    monkeypatch.setattr("sys.argv", ["cxr-x", "n=4"])
    assert parse_command(None, "cxr-x", "usage", {"n": int}) == {"n": 4}


def test_exit_on_error_gives_one_line_for_file_and_value_errors_only():
    with pytest.raises(SystemExit, match=r"^cxr-x: error: no such file$"):
        with exit_on_error("cxr-x"):
            raise FileNotFoundError("no such file")
    with pytest.raises(SystemExit, match=r"^cxr-x: error: bad value$"):
        with exit_on_error("cxr-x"):
            raise ValueError("bad value")
    with pytest.raises(KeyError):
        with exit_on_error("cxr-x"):
            raise KeyError("a bug, not a user error")
