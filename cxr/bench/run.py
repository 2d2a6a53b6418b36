"""``cxr-bench``: run the sections, write ``bench-<device>.json`` and ``.md``."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cxr.bench import plot, report, targets
from cxr.bench.deploy import bench_deploy, deploy_ratios, deploy_targets
from cxr.bench.fed import bench_fed_all
from cxr.bench.models import bench_models
from cxr.bench.pipeline import bench_pipeline, make_data
from cxr.bench.settings import Settings
from cxr.bench.timing import machine_info

SECTIONS = ("pipeline", "models", "deploy", "fed", "metric")


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
    if "deploy" in sections:
        result["deploy"] = bench_deploy(s)
    if "metric" in sections:
        result["metric"] = benchmark(n_images=s.metric_images, repeats=max(3, s.repeats))
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["elapsed_s"] = time.perf_counter() - started
    result["ratios"] = targets.ratios(result)
    result["targets"] = targets.targets(result)
    if "deploy" in result:
        result["ratios"]["deploy_depthwise_vs_plain"] = deploy_ratios(result["deploy"])
        result["targets"] += deploy_targets(result["deploy"])
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
