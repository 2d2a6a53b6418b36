"""``cxr-synth``: write synthetic stand-ins for the two datasets, for tests, demos and smoke runs.

cxr-synth ped-cxr OUT [--n 600] [--seed 0] [--min-side 96] [--max-side 320]
cxr-synth rsna OUT [--n 200] [--seed 0] [--size 1024]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cxr.cli.common import HelpFormatter


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-synth", description="Write a synthetic chest X-ray dataset.", formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="dataset", required=True)

    ped = sub.add_parser(
        "ped-cxr",
        help="Ped-ChestXray (Kermany) tree: {train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg",
        formatter_class=HelpFormatter,
    )
    ped.add_argument("out", type=Path, help="root folder to create (e.g. data/chest_xray)")
    ped.add_argument("--n", type=int, default=600, help="number of images (>= 20)")
    ped.add_argument("--seed", type=int, default=0, help="random seed")
    ped.add_argument("--min-side", type=int, default=96, help="smallest image height/width in pixels")
    ped.add_argument("--max-side", type=int, default=320, help="largest image height/width in pixels")

    rsna = sub.add_parser(
        "rsna",
        help="RSNA Pneumonia Detection Challenge layout: DICOMs + label CSVs",
        formatter_class=HelpFormatter,
    )
    rsna.add_argument("out", type=Path, help="root folder to create")
    rsna.add_argument("--n", type=int, default=200, help="number of patients/images")
    rsna.add_argument("--seed", type=int, default=0, help="random seed")
    rsna.add_argument("--size", type=int, default=1024, help="side of the square DICOM images in pixels")
    return parser


def _ped_cxr_summary(root: Path) -> str:
    parts = []
    for split in ("train", "val", "test"):
        counts = {c: sum(1 for _ in (root / split / c).glob("*.jpeg")) for c in ("NORMAL", "PNEUMONIA")}
        parts.append(
            f"{split} {sum(counts.values())} ({counts['NORMAL']} NORMAL, {counts['PNEUMONIA']} PNEUMONIA)"
        )
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.dataset == "ped-cxr":
            from cxr.synth.ped_cxr import write_ped_cxr

            root = write_ped_cxr(
                args.out, n=args.n, seed=args.seed, min_side=args.min_side, max_side=args.max_side
            )
            print(f"ped-cxr: wrote {args.n} images to {root}: {_ped_cxr_summary(root)}")
        else:
            from cxr.synth.rsna import write_rsna

            root = Path(write_rsna(args.out, n=args.n, seed=args.seed, size=args.size))
            n_dicom = sum(1 for _ in root.rglob("*.dcm"))
            print(f"rsna: wrote {n_dicom} DICOM files ({args.size}x{args.size}) and labels to {root}")
    except (
        ValueError,
        FileExistsError,
    ) as err:  # bad arguments or a non-empty target: a usage error, not a crash
        parser.error(str(err))


if __name__ == "__main__":
    main()
