"""``python -m cxr.reproduce``: the ``cxr-reproduce`` command line (``make reproduce-tables``)."""

from cxr.reproduce.cli import main

main()
