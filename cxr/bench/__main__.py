"""``python -m cxr.bench``: see :mod:`cxr.bench`."""

from cxr.bench.cli import main

main()
