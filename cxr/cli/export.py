"""``cxr-export``: the command line of :func:`cxr.inference.export.export_onnx`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cxr.cli.common import (
    HelpFormatter,
    exit_on_error,
    positive_float,
    positive_int,
    probability,
    setup_logging,
)
from cxr.inference.export import FORMATS

PROG = "cxr-export"
DESCRIPTION = """\
Exports a classifier checkpoint (plain_cnn, depthwise_cnn, mobilenet) to ONNX: input 'image' float32
(B, 1, S, S) normalised as in training; outputs 'logits' and 'probabilities'. The file's metadata
holds the image size, normalisation, class names and decision threshold. Prints the written path."""


def build_parser() -> argparse.ArgumentParser:
    """The ``cxr-export`` parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, metavar="PATH", help="the classifier checkpoint")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="file format")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="output file (default: the checkpoint's path with suffix .onnx)",
    )
    parser.add_argument("--opset", type=positive_int, default=17, metavar="N", help="ONNX opset version")
    parser.add_argument(
        "--check", action=argparse.BooleanOptionalAction, default=True,
        help="compare ONNX Runtime with PyTorch on random inputs (when onnxruntime is installed)",
    )  # fmt: skip
    parser.add_argument(
        "--atol", type=positive_float, default=1e-4, help="largest accepted |ONNX - PyTorch| probability"
    )
    parser.add_argument(
        "--threshold", type=probability, metavar="P",
        help="decision threshold to store (default: postprocess.json tuned on this checkpoint, else the "
        "checkpoint's own)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``cxr-export``: prints the written file's path; one-line errors on bad arguments or checkpoints."""
    args = build_parser().parse_args(argv)
    setup_logging()
    from cxr.inference.export import export_onnx

    with exit_on_error(PROG):
        path = export_onnx(args.ckpt, args.out, args.opset, args.check, args.atol, args.threshold)
    print(path)


if __name__ == "__main__":
    main()
