"""``python -m cxr.reporting.reproduce``: the ``cxr-reproduce`` command line (``make reproduce-tables``)."""

from cxr.cli.reproduce import main

main()
