"""Command lines of ``key=value`` tokens, as Hydra writes overrides, for the tools that need no Hydra
config (``cxr-predict``, ``cxr-tune``, ``cxr-export``)."""

from __future__ import annotations

import contextlib
import glob
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def parse_key_values(
    argv: Sequence[str],
    prog: str,
    usage: str,
    options: Mapping[str, Callable[[str], Any]],
    repeated: Sequence[str] = (),
) -> dict[str, Any]:
    """``key=value`` tokens to a dict, each value converted by ``options[key]``; keys in ``repeated``
    collect lists (present, possibly empty). ``-h``/``--help`` prints ``usage`` and exits 0; a bad
    token exits with a one-line error naming it."""
    if any(a in ("-h", "--help", "help") for a in argv):
        print(usage)
        raise SystemExit(0)
    args: dict[str, Any] = {k: [] for k in repeated}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep:
            raise SystemExit(f"{prog}: error: expected key=value, got {token!r} (see {prog} --help)")
        if key not in options:
            raise SystemExit(f"{prog}: error: unknown option {key!r}; known: {', '.join(sorted(options))}")
        try:
            converted = options[key](value)
        except ValueError as err:
            raise SystemExit(f"{prog}: error: {key}={value!r}: {err}") from None
        if key in repeated:
            args[key].append(converted)
        else:
            args[key] = converted
    return args


def require(args: Mapping[str, Any], keys: Sequence[str], prog: str) -> None:
    """Exit with one line naming the required ``keys`` that are missing or empty."""
    missing = [k for k in keys if not args.get(k)]
    if missing:
        raise SystemExit(
            f"{prog}: error: missing {' '.join(f'{k}=...' for k in missing)} (see {prog} --help)"
        )


def parse_command(
    argv: Sequence[str] | None,
    prog: str,
    usage: str,
    options: Mapping[str, Callable[[str], Any]],
    required: Sequence[str] = (),
    repeated: Sequence[str] = (),
) -> dict[str, Any]:
    """A tool's command line: :func:`parse_key_values` of ``argv`` (``sys.argv[1:]`` when None), then
    :func:`require` of ``required``; then logs INFO and above to stderr as ``LEVEL name: message``."""
    args = parse_key_values(sys.argv[1:] if argv is None else list(argv), prog, usage, options, repeated)
    require(args, required, prog)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args


@contextlib.contextmanager
def exit_on_error(prog: str) -> Iterator[None]:
    """Turn an OSError or ValueError (a missing file, a bad checkpoint or value) into a one-line
    ``prog: error: ...`` exit."""
    try:
        yield
    except (OSError, ValueError) as err:
        raise SystemExit(f"{prog}: error: {err}") from None


def boolean(value: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no`` (any case)."""
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("expected true or false")
    return lowered in ("true", "1", "yes")


def floats(value: str) -> list[float]:
    """A comma-separated list of numbers, e.g. ``0.3,0.4,0.5``."""
    items = [v for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError("expected comma-separated numbers")
    return [float(v) for v in items]


def expand(patterns: Sequence[str]) -> list[Path]:
    """Paths with wildcards (``*``, ``?``, ``[...]``, ``**``) expanded and sorted; a pattern that
    matches nothing stays as given, so that the caller's 'no such file' names it."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        paths.extend(Path(p) for p in matches or [pattern])
    return paths
