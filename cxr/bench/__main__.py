"""``python -m cxr.bench``: see :mod:`cxr.bench`."""

from cxr.cli.bench import main

main()
