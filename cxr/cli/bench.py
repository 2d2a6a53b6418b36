"""``cxr-bench`` / ``make bench``: run the benchmark sections and write ``bench-<device>.{json,md,png}``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import replace

import torch

from cxr.cli.common import HelpFormatter


def main(argv: Sequence[str] | None = None) -> None:
    # imported here: cxr.bench imports this module for its own ``main``
    from cxr.bench.models import bench_model
    from cxr.bench.run import SECTIONS, run, write
    from cxr.bench.settings import CLASSIFIERS, Settings

    parser = argparse.ArgumentParser(
        prog="cxr-bench",
        description="Measure the input pipeline, the models (CPU; GPU with bf16 + channels_last where "
        "present) and the RSNA metric; write bench-<cpu|gpu>.json, .md and .png with the machine and the "
        "targets.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--out", default="experiments/results", help="folder for bench-<device>.json/.md/.png"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    parser.add_argument("--cpu-only", action="store_true", help="ignore a CUDA device")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="benchmark sections to run"
    )
    parser.add_argument("--models", nargs="*", choices=CLASSIFIERS, help="classifiers to time")
    parser.add_argument("--encoders", nargs="*", help="RetinaNet timm encoders to time (none: skip)")
    parser.add_argument("--repeats", type=int, help="timed repeats per figure")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on CUDA")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one bench_model call as JSON
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(bench_model(**json.loads(args.child))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides: dict = {"gpu": torch.cuda.is_available() and not args.cpu_only, "compile": args.compile}
    if args.models is not None:
        overrides["models"] = tuple(args.models)
        overrides["fed_models"] = tuple(m for m in Settings.fed_models if m in args.models)
    if args.encoders is not None:
        overrides["encoders"] = tuple(args.encoders)
    if args.repeats is not None:
        overrides["repeats"] = args.repeats
    s = Settings.quick_run(**overrides) if args.quick else replace(Settings(), **overrides)
    result = run(s, args.sections)
    paths = [p for p in write(result, args.out) if p is not None]
    print(paths[1].read_text())
    print(f"wrote {', '.join(map(str, paths))} in {result['elapsed_s']:.0f} s")
