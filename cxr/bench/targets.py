"""Side-by-side ratios and the issue's targets, computed from a bench result dict (pure functions)."""

from __future__ import annotations

# The numeric targets.
CACHED_OVER_DECODE = 5.0
DEPTHWISE_FLOPS_FRACTION = 1 / 6
DEPTHWISE_CPU_SPEEDUP = 3.0


def config_label(row: dict) -> str:
    """``cpu fp32``, ``cuda bf16 + channels_last`` ... for a model row or device setting."""
    parts = [row["device"], "bf16" if row.get("bf16") else "fp32"]
    if row.get("channels_last"):
        parts.append("channels_last")
    if row.get("fold_bn"):
        parts.append("BN folded")
    if row.get("compile"):
        parts.append("compile")
    return " + ".join(parts).replace(" + ", " ", 1)


def images_per_s(row: dict | None, *keys: str) -> float | None:
    for key in keys:
        if row is None:
            return None
        row = row.get(key)
    return row.get("images_per_s") if isinstance(row, dict) else None


def div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def pipeline_rate(result: dict, stage: str, size: int, workers: int | None = None) -> float | None:
    for row in result.get("pipeline", []):
        if row["stage"] == stage and row["size"] == size and row.get("workers") == workers:
            return row["images_per_s"]
    return None


def ratios(result: dict) -> dict:
    """Side-by-side ratios from one run: depthwise vs plain per device setting, cached vs decoding per
    size, and the 2-worker loader vs each classifier's CPU training step."""
    out: dict = {"depthwise_vs_plain": {}, "cached_vs_decode": {}, "loader2_vs_train_cpu": {}}
    rows = result.get("models", [])
    for label in dict.fromkeys(config_label(r) for r in rows):
        by_name = {r["model"]: r for r in rows if config_label(r) == label}
        plain, dw = by_name.get("plain_cnn"), by_name.get("depthwise_cnn")
        if plain is None or dw is None:
            continue
        entry = {
            "flops_fraction": div(dw.get("flops"), plain.get("flops")),
            "params_fraction": div(dw.get("params"), plain.get("params")),
            "train_speedup": div(images_per_s(dw, "train"), images_per_s(plain, "train")),
        }
        for b in dw.get("infer", {}):
            entry[f"infer_b{b}_speedup"] = div(images_per_s(dw, "infer", b), images_per_s(plain, "infer", b))
        out["depthwise_vs_plain"][label] = entry
    settings = result["settings"]
    for size in (settings["cls_size"], settings["det_size"]):
        cached = pipeline_rate(result, "cached", size)
        out["cached_vs_decode"][str(size)] = {
            stage: div(cached, pipeline_rate(result, stage, size))
            for stage in ("jpeg_decode", "jpeg_decode_full", "dicom_decode")
        }
    loader2 = pipeline_rate(result, "loader", settings["cls_size"], workers=2)
    for r in rows:
        if config_label(r) == "cpu fp32" and r["model"] != "retinanet":
            out["loader2_vs_train_cpu"][r["model"]] = div(loader2, images_per_s(r, "train"))
    return out


def _target(name: str, measured: str, met: bool | None) -> dict:
    return {"target": name, "measured": measured, "met": met}


def fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def targets(result: dict) -> list[dict]:
    """The issue's targets with what this run measured; ``met`` is None where it could not be measured."""
    r = result["ratios"]
    rows = []
    cached = [
        v
        for per_size in r["cached_vs_decode"].values()
        for k, v in per_size.items()
        if k != "jpeg_decode_full" and v is not None
    ]
    text = "; ".join(
        f"{size} px: JPEG {fmt(v.get('jpeg_decode'), '.0f', '×')}, DICOM "
        f"{fmt(v.get('dicom_decode'), '.0f', '×')}"
        for size, v in r["cached_vs_decode"].items()
    )
    rows.append(
        _target(
            f"cached pipeline ≥ {CACHED_OVER_DECODE:.0f}× the images/s of decoding JPEG/DICOM",
            text,
            min(cached) >= CACHED_OVER_DECODE if cached else None,
        )
    )
    loader = r["loader2_vs_train_cpu"]
    fed = [f for f in result.get("fed", []) if f["device"] == "cpu"]
    text = ", ".join(f"{m} {fmt(v, '.1f', '×')}" for m, v in loader.items()) or "n/a"
    if fed:
        text += "; training fed by it: model busy " + ", ".join(f"{f['model']} {f['busy']:.0%}" for f in fed)
    values = [v for v in loader.values() if v is not None]
    rows.append(
        _target(
            "2-worker loader outpaces every classifier's CPU training step (loader ÷ train images/s)",
            text,
            min(values) > 1 if values else None,
        )
    )
    cpu = r["depthwise_vs_plain"].get("cpu fp32", {})
    frac = cpu.get("flops_fraction")
    rows.append(
        _target(
            f"depthwise_cnn FLOPs ≤ 1/{round(1 / DEPTHWISE_FLOPS_FRACTION)} of plain_cnn's",
            f"1/{1 / frac:.1f}" if frac else "n/a",
            frac <= DEPTHWISE_FLOPS_FRACTION if frac else None,
        )
    )
    for label, how in (
        ("cpu fp32", "eager PyTorch"),
        ("cpu fp32 + channels_last + BN folded", "channels_last + BN folded into convs, both models"),
    ):
        ratios_here = r["depthwise_vs_plain"].get(label, {})
        speedups = {
            int(k[7:].split("_")[0]): v
            for k, v in ratios_here.items()
            if k.startswith("infer_b") and v is not None
        }
        text = ", ".join(f"batch {b}: {v:.2f}×" for b, v in speedups.items()) or "n/a"
        rows.append(
            _target(
                f"depthwise_cnn ≥ {DEPTHWISE_CPU_SPEEDUP:.0f}× plain_cnn's CPU inference throughput, "
                f"{how} (largest batch decides)",
                text,
                speedups[max(speedups)] >= DEPTHWISE_CPU_SPEEDUP if speedups else None,
            )
        )
    gpu_fed = [f for f in result.get("fed", []) if f["device"] == "cuda"]
    if gpu_fed:
        text = ", ".join(
            f"{f.get('label', f['model'])} ({f['workers']} workers) busy {f['busy']:.0%}"
            + (f", NVML {f['gpu_util']:.0f}%" if f.get("gpu_util") is not None else "")
            for f in gpu_fed
        )
        rows.append(
            _target(
                "GPU kept busy by the data path (share of step time computing)",
                text,
                min(f["busy"] for f in gpu_fed) >= 0.9,
            )
        )
    else:
        rows.append(_target("GPU kept busy by the data path", "no GPU on this machine: not measured", None))
    return rows
