"""The bench figure (``bench-<device>.png``, a pure function of a bench result dict).

Left: the input pipeline's images/s per stage at both sizes, with each model's CPU training step drawn
as a vertical line: a stage whose bar ends right of a line feeds that model faster than it trains (the
model, not the input, is the bottleneck). Middle: every model row's training and inference images/s.
Right (with the deploy section): each classifier's images/s on each deployable CPU path. All on a
log scale: the figures span five orders of magnitude.
"""

from __future__ import annotations

from pathlib import Path

from cxr.bench.targets import config_label, images_per_s, pipeline_rate

PIPELINE_LABELS = {
    "jpeg_decode": "JPEG decode (draft) + resize",
    "jpeg_decode_full": "JPEG decode (full) + resize",
    "dicom_decode": "DICOM decode + resize",
    "cached": "cached",
}


def _pipeline_rows(result: dict) -> list[tuple[str, str, int | None]]:
    """(label, stage, workers) of the pipeline rows present, in the report's order."""
    rows = [(label, stage, None) for stage, label in PIPELINE_LABELS.items()]
    workers = sorted({r["workers"] for r in result.get("pipeline", []) if r["stage"] == "loader"})
    rows += [(f"augmented loader, {w} worker{'s' if w != 1 else ''}", "loader", w) for w in workers]
    return rows


def _cpu_training_steps(result: dict) -> list[tuple[str, float]]:
    """``(label, images/s)`` of every model's CPU fp32 training step (eager, contiguous), slowest
    first: the loader's yardsticks."""
    out = []
    for row in result.get("models", []):
        plain_cpu = row["device"] == "cpu" and not (row.get("bf16") or row.get("channels_last"))
        rate = images_per_s(row, "train")
        if plain_cpu and rate:
            out.append((f"{row['label']} ({row['image_size']} px)", rate))
    return sorted(out, key=lambda item: item[1])


def _bars(ax, labels: list[str], series: dict[str, list[float | None]]) -> None:
    """Grouped horizontal bars: one group per label (top to bottom), one bar per series."""
    height = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ys = [g + (i - (len(series) - 1) / 2) * height for g in range(len(labels))]
        kept = [(y, v) for y, v in zip(ys, values, strict=True) if v]
        if kept:
            ax.barh([y for y, _ in kept], [v for _, v in kept], height=height, color=f"C{i}", label=name)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.grid(axis="x", which="both", alpha=0.3)


def draw(result: dict):
    """The bench figure (a matplotlib ``Figure``, one panel per section present: pipeline, models,
    deploy); None when the result has none of them."""
    from matplotlib.figure import Figure

    s = result["settings"]
    panels = [p for p in ("pipeline", "models") if result.get(p)]
    panels += ["deploy"] if (result.get("deploy") or {}).get("rows") else []
    if not panels:
        return None
    # a GPU run has three times the model rows: grow with them so that their labels stay readable
    height = max(6.0, 2.0 + 0.6 * len(result.get("models", [])))
    fig = Figure(figsize=(7.5 * len(panels), height), layout="constrained")
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0], strict=True))
    if "pipeline" in axes:
        ax, rows = axes["pipeline"], _pipeline_rows(result)
        sizes = [s["cls_size"], s["det_size"]]
        _bars(
            ax,
            [label for label, _, _ in rows],
            {f"{z} px": [pipeline_rate(result, stage, z, w) for _, stage, w in rows] for z in sizes},
        )
        for i, (name, rate) in enumerate(_cpu_training_steps(result)):
            ax.axvline(rate, color=f"C{i + 2}", ls="--", lw=1.2, label=f"training step: {name}")
        ax.set(xlabel="images/s (log)", title="Input pipeline vs each model's CPU training step")
    if "models" in axes:
        ax, rows = axes["models"], result["models"]
        batches = sorted({int(b) for r in rows for b in r.get("infer", {})})
        series = {"training step": [images_per_s(r, "train") for r in rows]}
        series |= {f"inference, batch {b}": [images_per_s(r, "infer", str(b)) for r in rows] for b in batches}
        _bars(ax, [f"{r['label']}\n{config_label(r)}" for r in rows], series)
        ax.set(xlabel="images/s (log)", title="Models")
    if "deploy" in axes:
        ax, d = axes["deploy"], result["deploy"]
        from cxr.bench.deploy import PATHS

        models = list(dict.fromkeys(r["model"] for r in d["rows"]))
        rate = {(r["model"], r["path"]): r.get("images_per_s") for r in d["rows"]}
        _bars(ax, list(PATHS), {m: [rate.get((m, p)) for p in PATHS] for m in models})
        ax.set(
            xlabel="images/s (log)",
            title=f"Deployable CPU paths ({d['threads']} threads, batch {d['batch']}, {d['image_size']} px)",
        )
    for ax in axes.values():
        ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    m = result["machine"]
    machine = m["cpu"] + (f" + {m['gpu']}" if m.get("gpu") else "")
    fig.suptitle(f"cxr bench on {machine} ({m['usable_cores']} cores), {m['date']}", fontsize="medium")
    return fig


def save(result: dict, path: str | Path) -> Path | None:
    """:func:`draw` the figure into ``path`` (PNG); None, and no file, when there is nothing to draw."""
    fig = draw(result)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
