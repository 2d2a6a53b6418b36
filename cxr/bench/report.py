"""The Markdown report of a bench result (a pure function of its dict)."""

from __future__ import annotations

from collections.abc import Sequence

from cxr.bench.targets import config_label, fmt, images_per_s, pipeline_rate


def _runs(n: int) -> str:
    return "one timed run" if n == 1 else f"the median of {n} timed runs"


def _rate(x: float | None) -> str:
    """Images/s with three significant digits at most (0.0412, 4.12, 41.2, 412, 4120)."""
    if x is None:
        return "n/a"
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _command(result: dict) -> str:
    """The command that makes this report: ``make bench``, or the sections run alone."""
    from cxr.bench.run import SECTIONS

    sections = list(result.get("sections", SECTIONS))
    if sections == list(SECTIONS):
        return "`make bench` (`python -m cxr.bench`)"
    quick = " --quick" if result["settings"].get("quick") else ""
    return f"`python -m cxr.bench{quick} --sections {' '.join(sections)}`"


def _machine_line(m: dict) -> str:
    line = (
        f"{m['cpu']}, {m['usable_cores']} usable of {m['cpu_cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), Python {m['python']}"
    )
    if m.get("gpu"):
        line += f"; GPU {m['gpu']} (CUDA {m['cuda']})"
    return line


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


_STAGES = {
    "jpeg_decode": "JPEG decode (draft mode) + resize, as the cache builds",
    "jpeg_decode_full": "JPEG decode (full resolution) + resize",
    "dicom_decode": "DICOM decode + resize",
    "cached": "cached: memory-mapped row + normalise (no augmentation)",
}


def markdown(result: dict, figure: str | None = None) -> str:
    """The report: machine, targets, pipeline, models, depthwise vs plain, fed training, RSNA metric;
    ``figure``, a path relative to the report, is shown after the targets."""
    m, s = result["machine"], result["settings"]
    cpu_line = f"CPU: {m['cpu']}, {m['usable_cores']} cores, torch {m['torch']}, {m['torch_threads']} threads"
    out = [
        f"# cxr benchmark: {'gpu' if s['gpu'] else 'cpu'}{' (quick smoke run)' if s['quick'] else ''}",
        "",
        f"Made by {_command(result)} on {m['date']} in {result['elapsed_s']:.0f} s.",
        f"Machine: {_machine_line(m)}. Load average {m['load_average_start'][0]} at the start, "
        f"{m['load_average_end'][0]} at the end (other processes share the cores). Figures are medians of "
        f"{s['repeats']} timed runs after a warm-up ({3 * s['repeats']} for batch-1 inference; RetinaNet on CPU "
        f"fewer, see Models; CUDA {s['gpu_repeats']} after {s['gpu_warmup']}).",
        "GPU: "
        + (
            m["gpu"]
            if m.get("gpu")
            else "none found, so this file has CPU figures only; the GPU "
            "rows (bf16 autocast + channels_last) come from running `make bench` on a CUDA machine."
        ),
        "",
    ]
    out += ["## Targets", ""]
    out += _table(
        ["target", "measured", "met"],
        [
            [t["target"], t["measured"], {True: "yes", False: "**no**", None: "not measured"}[t["met"]]]
            for t in result.get("targets", [])
        ],
    )
    if figure:
        out += [f"![Input pipeline vs training step, and every model's images/s (log scale)]({figure})", ""]
    if result.get("pipeline"):
        sizes = [s["cls_size"], s["det_size"]]
        out += [
            f"## Input pipeline, images/s ({cpu_line})",
            "",
            f"{s['n_files']} synthetic files: Kermany-style JPEGs {s['jpeg_sides'][0]}–{s['jpeg_sides'][1]} px, "
            f"RSNA-style JPEG-Baseline DICOMs {s['dicom_side']} px. Cached and loader rows use the "
            f"Ped-ChestXray datamodule at {sizes[0]} px (augment `{s['augment'][0]}`) and the RSNA datamodule "
            f"at {sizes[1]} px (augment `{s['augment'][1]}`, boxes carried through); loader batch "
            f"{s['loader_batch']}, workers persistent, timed over whole epochs.",
            "",
        ]
        names = dict(_STAGES)
        for w in s["workers"]:
            names[f"loader{w}"] = f"full augmented loader, {w} worker{'s' if w != 1 else ''}"
        table = []
        for key, title in names.items():
            stage, workers = ("loader", int(key[6:])) if key.startswith("loader") else (key, None)
            table.append([title, *(_rate(pipeline_rate(result, stage, z, workers)) for z in sizes)])
        out += _table(["stage", *(f"{z} px" for z in sizes)], table)
    if result.get("models"):
        out += [
            "## Models",
            "",
            f"Random inputs, 1 channel. Classifiers at {s['cls_size']} px, RetinaNet at {s['det_size']} px. "
            f"Training: Adam steps at batch {s['train_batch']} (RetinaNet on CPU: batch "
            f"{s['det_train_batch_cpu']}); inference: eval mode, no grad, batches {list(s['infer_batches'])}"
            + (
                ""
                if list(s["det_infer_batches_cpu"]) == list(s["infer_batches"])
                else f" (RetinaNet on CPU: {list(s['det_infer_batches_cpu'])})"
            )
            + ". RetinaNet costs tens to hundreds of GFLOPs per image (GFLOPs column), so each of its CPU "
            f"figures is {_runs(s.get('det_repeats_cpu', 2))} after a warm-up (3× that at batch 1). "
            "FLOPs: 2 × multiply-adds of convolutions and matmuls for one image. Peak memory: on CPU the "
            "growth of the subprocess's peak resident memory over its resident memory after imports "
            "(weights, activations, gradients, Adam state; ≥ marks a lower bound, where the kernel refused to "
            "reset its high-water mark and the import-time peak hid the model's); on CUDA "
            "`max_memory_allocated`. Each row's machine is in its setting column. The `channels_last + BN "
            "folded` rows are CPU inference only, the deployable CPU path applied to plain_cnn and "
            "depthwise_cnn alike: BatchNorm folded into the preceding conv (`cxr.inference.optimise.fold_batch_norm`) "
            "and NHWC layout.",
            "",
        ]
        batches = sorted({int(b) for r in result["models"] for b in r.get("infer", {})})
        header = [
            "model",
            "setting",
            "px",
            "params (M)",
            "GFLOPs",
            "train img/s",
            *(f"infer img/s b{b}" for b in batches),
            "peak MB train",
            "peak MB infer",
        ]
        table = []
        for r in result["models"]:
            setting = config_label(r) + (f" ({m['gpu']})" if r["device"] == "cuda" else f" ({m['cpu']})")
            mem = r.get("peak_mem_mb", {})
            table.append(
                [
                    r["label"],
                    setting,
                    str(r["image_size"]),
                    fmt(r.get("params", 0) / 1e6, ".2f"),
                    fmt(r["flops"] / 1e9 if "flops" in r else None, ".2f"),
                    _rate(images_per_s(r, "train"))
                    + (f" (b{r['train']['batch_size']})" if "train" in r else ""),
                    *(_rate(images_per_s(r, "infer", str(b))) for b in batches),
                    *(
                        ("≥ " if phase in r.get("peak_mem_lower_bound", ()) else "")
                        + fmt(mem.get(phase), ".0f")
                        for phase in ("train", "infer")
                    ),
                ]
            )
        out += _table(header, table)
        errors = [
            f"- {r['label']} ({config_label(r)}): {phase}: {err}"
            for r in result["models"]
            for phase, err in r.get("errors", {}).items()
        ]
        if errors:
            out += ["Failed runs:", "", *errors, ""]
    dvp = result.get("ratios", {}).get("depthwise_vs_plain", {})
    if dvp:
        keys = list(next(iter(dvp.values())))
        out += [
            "## depthwise_cnn ÷ plain_cnn (same widths 256-128-64-32-32, same depth, measured side by side)",
            "",
        ]
        out += _table(["figure", *dvp], [[k, *(fmt(v.get(k), ".3f") for v in dvp.values())] for k in keys])
    if result.get("deploy"):
        out += _deploy_section(result["deploy"], m)
    if result.get("fed"):
        out += [
            f"## Data path feeding the model ({cpu_line}" + (f"; GPU {m['gpu']})" if m.get("gpu") else ")"),
            "",
            "Training steps fed by the real cached, augmented loaders (classifiers: Ped-ChestXray at "
            f"{s['cls_size']} px, `{s['augment'][0]}`; RetinaNet: RSNA at {s['det_size']} px, `{s['augment'][1]}`, "
            "pinned memory on CUDA): images/s, and the share of wall time spent computing (the rest is "
            "waiting for the next batch). On CPU the loader workers and the model share the cores, so the "
            "model also runs slower than on random tensors.",
            "",
        ]
        alone = {(r["label"], config_label(r)): images_per_s(r, "train") for r in result.get("models", [])}
        out += _table(
            [
                "model",
                "setting",
                "workers",
                "batch",
                "img/s fed",
                "img/s on random tensors",
                "busy",
                "GPU util (NVML)",
            ],
            [
                [
                    f.get("label", f["model"]),
                    config_label(f),
                    str(f["workers"]),
                    str(f["batch_size"]),
                    _rate(f["images_per_s"]),
                    _rate(alone.get((f.get("label", f["model"]), config_label(f)))),
                    f"{f['busy']:.0%}",
                    fmt(f.get("gpu_util"), ".0f", "%"),
                ]
                for f in result["fed"]
            ],
        )
    if result.get("metric"):
        b = result["metric"]
        out += [
            f"## RSNA challenge metric ({cpu_line}; metric on {b['num_threads']} torch thread)",
            "",
            *_table(
                ["implementation", f"seconds for {b['n_images']:,} images", "CPU seconds", "mAP"],
                [
                    [
                        "vectorised (`rsna_map`)",
                        fmt(b["vectorised_s"], ".3f"),
                        fmt(b["vectorised_cpu_s"], ".3f"),
                        fmt(b["vectorised_value"], ".4f"),
                    ],
                    [
                        "reference loop",
                        fmt(b["reference_s"], ".3f"),
                        fmt(b["reference_cpu_s"], ".3f"),
                        fmt(b["reference_value"], ".4f"),
                    ],
                ],
            ),
            f"Speed-up {b['speedup']:.1f}×, |difference| {b['abs_diff']:.1e}.",
            "",
        ]
    return "\n".join(out)


def _deploy_section(d: dict, m: dict) -> list[str]:
    """The deployable CPU paths (:mod:`cxr.bench.deploy`): one row per model and path, then the
    depthwise ÷ plain ratio per path."""
    from cxr.bench.deploy import PATHS, deploy_ratios

    if "error" in d:
        return ["## Deployable CPU paths", "", f"The section failed: {d['error']}", ""]
    peak = d["peak"]
    out = [
        f"## Deployable CPU paths ({m['cpu']}, fp32, {d['threads']} threads, batch {d['batch']}, "
        f"{d['image_size']} px)",
        "",
        "`eager`: PyTorch as trained (NCHW). `folded + channels_last`: BatchNorm folded into the convs, NHWC "
        "(`cxr-predict --backend pytorch`). `onnxruntime`: the file `cxr-export` writes (BN folded, exact "
        "rewrites of `cxr.inference.onnx_form`) on the session `cxr-predict --backend onnxruntime` uses. "
        f"Images/s: {_runs(d['repeats'])} per path or of as many as fit in {d.get('seconds', 0):g} s, after a "
        "warm-up, both models timed in turns; *per CPU-s*: "
        "images per second of the process's CPU time × threads, which other processes on the cores barely "
        "change (the section runs in its own process whose OpenMP and ONNX Runtime threads sleep while idle, "
        "so CPU time counts work). ONNX Runtime runs one image per call (as `cxr-predict` does). GFLOPs: per "
        "image, 2 × multiply-adds; *model* is what the network computes, *run* what the path executes (the "
        "rewrites skip some). Achieved GFLOP/s = run GFLOPs × images per CPU-second; peak = the best "
        f"{peak['n']}×{peak['n']} fp32 matmul on the same {peak['threads']} threads at either end of this run, "
        f"{peak['cpu_gflops_per_s']:.0f} GFLOP/s per CPU-second"
        + (" (" + ", ".join(f"{k} {v:.0f}" for k, v in peak["by"].items()) + ")" if peak.get("by") else "")
        + ". Max abs Δ: largest logit difference from eager PyTorch.",
        "",
    ]
    rows = []
    for r in d["rows"]:
        if "error" in r:
            rows.append([r["model"], r["path"], "failed: " + r["error"][:80], "", "", "", "", "", ""])
            continue
        rows.append(
            [
                r["model"],
                r["path"],
                _rate(r["images_per_s"]),
                _rate(r.get("cpu_images_per_s")),
                fmt(r["gflops"], ".3g"),
                fmt(r["gflops_run"], ".3g"),
                fmt(r["achieved_gflops_per_s"], ".0f"),
                fmt(100 * r["peak_fraction"], ".0f", " %"),
                fmt(r["max_abs_diff"], ".1e"),
            ]
        )
    out += _table(
        [
            "model",
            "path",
            "images/s",
            "per CPU-s",
            "GFLOPs model",
            "GFLOPs run",
            "GFLOP/s",
            "of peak",
            "max abs Δ",
        ],
        rows,
    )
    ratios = [
        [label, *(fmt(value, ".2f", "×") for value in deploy_ratios(d, key).values())]
        for label, key in (("images/s", "images_per_s"), ("per CPU-second", "cpu_images_per_s"))
    ]
    out += _table(["depthwise_cnn ÷ plain_cnn", *PATHS], ratios)
    out += _deploy_bound(d)
    return out


def _deploy_bound(d: dict) -> list[str]:
    """What bounds the ONNX Runtime ratio: FLOP ratio × efficiency ratio (both from this run)."""
    row = {(r["model"], r["path"]): r for r in d["rows"] if "peak_fraction" in r}
    plain, dw = row.get(("plain_cnn", "onnxruntime")), row.get(("depthwise_cnn", "onnxruntime"))
    if plain is None or dw is None:
        return []
    flop_ratio = plain["gflops_run"] / dw["gflops_run"]
    return [
        f"What bounds the ONNX Runtime ratio: it is the ratio of executed FLOPs ({flop_ratio:.1f}×) times the "
        f"ratio of efficiencies (depthwise_cnn at {dw['peak_fraction']:.0%} of the peak ÷ plain_cnn at "
        f"{plain['peak_fraction']:.0%} = {dw['peak_fraction'] / plain['peak_fraction']:.2f}) = "
        f"{flop_ratio * dw['peak_fraction'] / plain['peak_fraction']:.2f}×. plain_cnn's 3×3 convolutions run "
        "near the matmul peak, so no setting in the same precision moves it much; depthwise_cnn's depthwise "
        "convolutions and wide 100×100 maps are bound by memory traffic, and its 256→128 pointwise "
        "convolution is a GEMM with K = 256, less efficient than a 3×3 convolution.",
        "",
    ]
