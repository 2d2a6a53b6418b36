"""``cxr-predict``: the command line of :func:`cxr.inference.predict.predict`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cxr.cli.common import (
    HelpFormatter,
    exit_on_error,
    expand,
    positive_float,
    positive_int,
    probability,
    setup_logging,
)
from cxr.inference.onnx_member import BACKENDS
from cxr.inference.postprocess.boxes import BOX_SIZE_METHODS
from cxr.inference.postprocess.ensemble import SCORE_MODES
from cxr.inference.postprocess.wbf import ENSEMBLE_METHODS

PROG = "cxr-predict"
DESCRIPTION = """\
Runs one checkpoint, or an ensemble (several --ckpt paths, or a quoted glob such as
--ckpt 'runs/*/checkpoints/epoch*.ckpt'; last.ckpt is the resume point, usually a copy of the last
epoch), on JPEG, PNG or DICOM files (folders are searched recursively) and writes to --out DIR:
  classification  predictions.csv: file, probability (of pneumonia), label (1 = pneumonia at the
                  threshold), class, prob_<class> ..., error
  detection       predictions.csv: file, score, x, y, width, height (original pixels), prob_<class> ...,
                  error (one row per box; a file without boxes gets one row with empty box fields);
                  submission.csv in the RSNA challenge format (patientId = file name without suffix)
  settings.json   the checkpoints and the post-processing used, and where it came from
An unreadable file gets a row with its error; the others go on.

Post-processing: the checkpoints' own tuned values, then postprocess.json (written by cxr-tune),
then the options below, which win over both."""


def build_parser() -> argparse.ArgumentParser:
    """The ``cxr-predict`` parser; option groups: inputs/outputs, running, post-processing."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=HelpFormatter)
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "--ckpt", nargs="+", action="extend", required=True, metavar="PATH",
        help="checkpoint(s) of one ensemble; quoted globs are expanded; may be repeated",
    )  # fmt: skip
    io.add_argument(
        "--input", nargs="+", action="extend", required=True, metavar="PATH",
        help="image files (JPEG, PNG, DICOM) or folders searched recursively; may be repeated",
    )  # fmt: skip
    io.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the outputs")
    io.add_argument(
        "--overlays", action="store_true",
        help="PNGs in OUT/overlays: boxes, or Grad-CAM heat maps for classifiers",
    )  # fmt: skip
    running = parser.add_argument_group("running")
    running.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    running.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per batch")
    running.add_argument(
        "--backend", choices=BACKENDS, default="auto",
        help="auto: ONNX Runtime for classifiers on the CPU (the checkpoint's export, made and checked "
        "against PyTorch when missing), PyTorch for detectors, GPUs and --overlays",
    )  # fmt: skip
    post = parser.add_argument_group("post-processing (default: the tuned values)")
    post.add_argument(
        "--postprocess", default="auto", metavar="auto|none|PATH",
        help="auto: postprocess.json in the checkpoints' folder or up to two folders above it, used "
        "only when it was tuned on exactly these checkpoints; none: ignore it; PATH: this file",
    )  # fmt: skip
    post.add_argument(
        "--ensemble", choices=ENSEMBLE_METHODS,
        help="detection: merge the members' boxes by pooling + one NMS (the paper's) or weighted box fusion",
    )  # fmt: skip
    post.add_argument(
        "--nms",
        type=probability,
        metavar="IOU",
        help="detection: ensemble NMS (or WBF clustering) IoU threshold",
    )
    post.add_argument("--score", type=probability, metavar="P", help="detection: minimum box score")
    post.add_argument("--score-mode", choices=SCORE_MODES, help="detection: ensemble box score")
    post.add_argument("--box-size", choices=BOX_SIZE_METHODS, help="detection: box-size adjustment")
    post.add_argument(
        "--shrink", type=positive_float, metavar="F", help="detection: factor of --box-size shrink"
    )
    post.add_argument("--scale", type=float, metavar="S", help="detection: scale of --box-size percentile")
    post.add_argument(
        "--threshold", type=probability, metavar="P",
        help="classification: decision threshold on the pneumonia probability",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``cxr-predict``: exits with a one-line error on bad arguments, checkpoints or inputs."""
    args = build_parser().parse_args(argv)
    setup_logging()
    from cxr.inference.predict import predict

    with exit_on_error(PROG):
        predict(
            expand(args.ckpt, suffix=".ckpt"),
            expand(args.input),
            args.out,
            device=args.device,
            batch_size=args.batch_size,
            overlays=args.overlays,
            postprocess=args.postprocess,
            backend=args.backend,
            ensemble=args.ensemble,
            nms_thresh=args.nms,
            score_thresh=args.score,
            score_mode=args.score_mode,
            box_size=args.box_size,
            shrink=args.shrink,
            percentile_scale=args.scale,
            decision_threshold=args.threshold,
        )


if __name__ == "__main__":
    main()
