"""``cxr-tune``: the command line of :func:`cxr.inference.tune.tune_thresholds`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cxr.cli.common import (
    HelpFormatter,
    exit_on_error,
    expand,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    setup_logging,
)
from cxr.inference.postprocess.boxes import BOX_SIZE_METHODS
from cxr.inference.postprocess.ensemble import SCORE_MODES
from cxr.inference.postprocess.wbf import ENSEMBLE_METHODS
from cxr.inference.tune import NMS_GRID, SCORE_GRID

PROG = "cxr-tune"
DESCRIPTION = """\
Chooses post-processing on the checkpoints' validation splits (out-of-fold for k-fold runs) and
writes postprocess.json to --out (default: the checkpoints' common folder), where cxr-predict
finds it; the file names these checkpoints by path and SHA-256, and cxr-predict uses it only for
exactly them. Detection also writes nms_sweep.csv, nms_sweep.png and ensemble_comparison.csv (the
best validation mAP of pooling + NMS, of weighted box fusion and of each checkpoint alone).

The box size is stored, not tuned: the challenge's test boxes were drawn tighter than its training
boxes, so validation cannot choose it; its validation mAP is reported."""


def build_parser() -> argparse.ArgumentParser:
    """The ``cxr-tune`` parser; option groups: inputs/outputs, data loading, detection, classification."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=HelpFormatter)
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "--ckpt", nargs="+", action="extend", required=True, metavar="PATH",
        help="checkpoint(s) of one ensemble; quoted globs are expanded; may be repeated",
    )  # fmt: skip
    io.add_argument(
        "--data-dir", type=Path, required=True, metavar="DIR",
        help="the dataset the checkpoints were trained on (their validation splits are used)",
    )  # fmt: skip
    io.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for postprocess.json (default: the checkpoints' folder)",
    )
    data = parser.add_argument_group("running and data loading (default: the checkpoints' settings)")
    data.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    data.add_argument("--batch-size", type=positive_int, metavar="N", help="validation batch size")
    data.add_argument("--num-workers", type=non_negative_int, metavar="N", help="data loader workers")
    data.add_argument("--cache-dir", metavar="DIR", help="decoded-image cache folder")
    det = parser.add_argument_group("detection")
    det.add_argument(
        "--nms", type=probability, nargs="+", default=list(NMS_GRID), metavar="IOU",
        help="NMS IoU thresholds to try",
    )  # fmt: skip
    det.add_argument(
        "--scores", type=probability, nargs="+", default=list(SCORE_GRID), metavar="P",
        help="score thresholds to try",
    )  # fmt: skip
    det.add_argument("--score-mode", choices=SCORE_MODES, default="mean", help="ensemble box score")
    det.add_argument(
        "--ensemble", choices=ENSEMBLE_METHODS, default="nms",
        help="how to merge the members' boxes, tuned and stored: pooled + one NMS (the paper's) or weighted "
        "box fusion; both, and each checkpoint alone, are compared in ensemble_comparison.csv",
    )  # fmt: skip
    det.add_argument(
        "--box-size", choices=BOX_SIZE_METHODS, default="shrink", help="box-size adjustment to store"
    )
    det.add_argument(
        "--shrink", type=positive_float, default=0.875, metavar="F", help="factor of --box-size shrink"
    )
    det.add_argument("--scale", type=float, default=1.6, metavar="S", help="scale of --box-size percentile")
    clf = parser.add_argument_group("classification")
    clf.add_argument(
        "--target-recall", type=probability, metavar="R",
        help="the highest threshold with at least this recall (default: the threshold with the best F1)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``cxr-tune``: exits with a one-line error on bad arguments, checkpoints or data."""
    args = build_parser().parse_args(argv)
    setup_logging()
    from cxr.inference.postprocess import PostprocessSettings
    from cxr.inference.tune import tune_thresholds

    checkpoints = expand(args.ckpt, suffix=".ckpt")
    loading = {"batch_size": args.batch_size, "num_workers": args.num_workers, "cache_dir": args.cache_dir}
    with exit_on_error(PROG):  # PostprocessSettings checks its values
        detection = {
            "nms_thresholds": tuple(args.nms),
            "score_thresholds": tuple(args.scores),
            "settings": PostprocessSettings(
                "detection",
                ensemble=args.ensemble,
                score_mode=args.score_mode,
                box_size=args.box_size,
                shrink=args.shrink,
                percentile_scale=args.scale,
            ),
        }
        classification = {} if args.target_recall is None else {"target_recall": args.target_recall}
        tune_thresholds(
            checkpoints,
            args.data_dir,
            args.out,
            args.device,
            detection=detection,
            classification=classification,
            **{k: v for k, v in loading.items() if v is not None},
        )


if __name__ == "__main__":
    main()
