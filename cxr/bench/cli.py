"""``cxr-bench``: run the sections, write ``bench-<device>.json`` and ``.md``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from cxr.bench import plot, report, targets
from cxr.bench.fed import bench_fed_all
from cxr.bench.models import bench_model, bench_models
from cxr.bench.pipeline import bench_pipeline, make_data
from cxr.bench.settings import CLASSIFIERS, Settings
from cxr.bench.timing import machine_info

SECTIONS = ("pipeline", "models", "fed", "metric")


def run(s: Settings, sections: Sequence[str] = SECTIONS) -> dict:
    """Every requested section's figures, the machine and the settings, as written to the JSON file."""
    from cxr.metrics.rsna_reference import benchmark

    started = time.perf_counter()
    result: dict = {"machine": machine_info(), "settings": asdict(s), "sections": list(sections)}
    if {"pipeline", "fed"} & set(sections):
        with tempfile.TemporaryDirectory(prefix="cxr-bench-") as work:
            data = make_data(Path(work), s)
            if "pipeline" in sections:
                result["pipeline"] = bench_pipeline(data, s)
            if "fed" in sections:
                result["fed"] = bench_fed_all(data, s)
    if "models" in sections:
        result["models"] = bench_models(s)
    if "metric" in sections:
        result["metric"] = benchmark(n_images=s.metric_images, repeats=max(3, s.repeats))
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["elapsed_s"] = time.perf_counter() - started
    result["ratios"] = targets.ratios(result)
    result["targets"] = targets.targets(result)
    return result


def write(result: dict, out_dir: str | Path) -> tuple[Path, Path, Path | None]:
    """Write ``bench-<device>[-quick].json``, ``.md`` and ``.png`` (:func:`cxr.bench.plot.save`; None when
    there is nothing to draw) into ``out_dir``; returns the three paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{'gpu' if result['settings']['gpu'] else 'cpu'}{'-quick' if result['settings']['quick'] else ''}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    png_path = plot.save(result, out_dir / f"{stem}.png")
    md_path.write_text(report.markdown(result, figure=png_path.name if png_path else None))
    return json_path, md_path, png_path


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="cxr-bench",
        description="Measure the input pipeline, the models (CPU; GPU with bf16 + channels_last where "
        "present) and the RSNA metric; write bench-<cpu|gpu>.json, .md and .png with the machine and the "
        "targets.",
    )
    parser.add_argument(
        "--out", default="experiments/results", help="folder for bench-<device>.json/.md/.png"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    parser.add_argument("--cpu-only", action="store_true", help="ignore a CUDA device")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
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
