"""Progress that reads well wherever it goes: a bar updated in place on a terminal, a few plain lines
in a log file or CI output.

tqdm writes every refresh to a file as well (a carriage return, not a new line), so a cache build of
thousands of images fills a log with one long line or thousands of short ones. :func:`progress` gives
a tqdm bar when the stream is a terminal, else a :class:`LogProgress` that prints one line at the
start, at each quarter of the total and at the end (or, with no known total, at most one a minute).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

QUARTERS = (0.25, 0.5, 0.75)


class LogProgress:
    """tqdm's ``update`` / ``close`` / iteration / context-manager interface, printing whole lines.

    Lines look like ``cache → 200px: 250/1000 img (25%), 41.7 img/s, 6 s``. ``disable=True`` prints
    nothing.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        file: IO[str] | None = None,
        disable: bool = False,
        interval_s: float = 60.0,
    ) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.disable, self.interval_s = total, 0, disable, interval_s
        self.file = file if file is not None else sys.stderr
        self.start = self.last = time.monotonic()
        self.marks = [round(q * total) for q in QUARTERS] if total else []
        self.closed = False
        self._line("started")

    def _line(self, note: str = "") -> None:
        if self.disable:
            return
        elapsed = time.monotonic() - self.start
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        rate = f", {self.n / elapsed:.3g} {self.unit}/s" if elapsed > 0 and self.n else ""
        text = f"{self.desc}: {done} {self.unit}{share}{rate}, {elapsed:.0f} s" + (f" {note}" if note else "")
        print(text, file=self.file, flush=True)
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        crossed = [m for m in self.marks if before < m <= self.n and m < (self.total or 0)]
        if crossed or (not self.total and time.monotonic() - self.last >= self.interval_s):
            self._line()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line("done")

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LogProgress: nothing to iterate (made without an iterable)")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    file: IO[str] | None = None,
    disable: bool = False,
):
    """A progress reporter for ``iterable`` (or for ``update`` calls up to ``total``): a tqdm bar on a
    terminal (refreshed at most twice a second), a :class:`LogProgress` otherwise. Both support
    ``update(n)``, ``close()``, iteration and ``with``."""
    file = file if file is not None else sys.stderr
    if getattr(file, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=file, disable=disable, mininterval=0.5)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, file=file, disable=disable)
