"""What the argparse commands share (``cxr-predict``, ``cxr-tune``, ``cxr-export``): a help format
that shows defaults, argument types that refuse bad values in one line, quoted-glob expansion,
logging, and turning a user error into ``prog: error: ...``."""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; every option's default after its help, unless it has none
    (``None``) or is a flag that is off (``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def positive_int(value: str) -> int:
    """An integer >= 1 (a batch size, a worker count of at least one)."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def non_negative_int(value: str) -> int:
    """An integer >= 0 (``--num-workers 0`` loads in the main process)."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def probability(value: str) -> float:
    """A number in [0, 1] (thresholds, recalls)."""
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return number


def positive_float(value: str) -> float:
    """A finite number > 0."""
    number = float(value)
    if not 0.0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def setup_logging() -> None:
    """INFO and above to stderr as ``LEVEL name: message`` (a root logger with handlers is left as is)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def exit_on_error(prog: str) -> Iterator[None]:
    """Turn an OSError or ValueError (a missing file, a bad checkpoint or value) into a one-line
    ``prog: error: ...`` exit."""
    try:
        yield
    except (OSError, ValueError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise SystemExit(f"{prog}: error: {message}") from None


def expand(patterns: Sequence[str | Path], suffix: str | None = None) -> list[Path]:
    """Paths with wildcards (``*``, ``?``, ``[...]``, ``**``) expanded and sorted; a pattern that
    matches nothing stays as given, so that the caller's 'no such file' names it. With ``suffix``
    (e.g. ``".ckpt"``), what a wildcard matches is kept only with that suffix (a checkpoint folder
    also holds ``postprocess.json`` and ONNX exports); paths named in full are kept as given."""
    paths: list[Path] = []
    for pattern in map(str, patterns):
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        if suffix is not None:
            matches = [m for m in matches if m.endswith(suffix)]
        paths.extend(Path(p) for p in matches or [pattern])
    return paths


def raised_in(error: BaseException, package: str) -> bool:
    """Whether ``error`` was raised by code of ``package`` (the innermost frame of its traceback):
    e.g. a ``ValueError`` from ``cxr.data`` is a problem of the input data, by that package's
    contract one line naming the file, where one from elsewhere is a bug that keeps its traceback."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module == package or module.startswith(f"{package}.")
