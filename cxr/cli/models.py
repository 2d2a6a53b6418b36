"""``cxr-models``: parameters and FLOPs of every registered model at a given input size."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cxr.cli.common import HelpFormatter
from cxr.models import MODELS
from cxr.models.profile import format_markdown, profile_table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="cxr-models",
        description="Print parameters and GFLOPs per image of cxr models as a Markdown table.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--image-size", type=int, default=200, help="input side in pixels")
    parser.add_argument("--in-chans", type=int, default=1, help="input channels")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["plain_cnn", "depthwise_cnn", "mobilenet"],
        choices=sorted(MODELS),
        metavar="NAME",
        help=f"any of {sorted(MODELS)}",
    )
    args = parser.parse_args(argv)
    rows = profile_table(args.models, image_size=args.image_size, in_chans=args.in_chans)
    print(format_markdown(rows, args.image_size))


if __name__ == "__main__":
    main()
