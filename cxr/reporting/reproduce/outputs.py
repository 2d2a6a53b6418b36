"""Outputs of ``cxr-reproduce``: each table (Markdown + CSV) with its caption, training curves,
the post-processing table and NMS figure, inference throughput, the runs index and ``tables.md``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cxr.config.runs import job_status
from cxr.reporting.reproduce.plan import Job, data_dir, weights_note
from cxr.reporting.reproduce.postprocess import (
    CHECKPOINT_ENSEMBLE,
    MONITOR,
    SHRINK,
    best_epochs,
    kept_checkpoints,
    postprocess_sweep,
)
from cxr.reporting.reproduce.profiles import Profile
from cxr.reporting.tables import Table


def _onnx_runtime_model(model, example, folder: Path):
    """``model`` exported in its deployable form and run on ONNX Runtime, as ``cxr-predict`` runs it;
    None where onnx / onnxruntime are not installed."""
    from cxr.inference.onnx_member import OnnxClassifier, onnxruntime_available

    if not onnxruntime_available():
        return None
    import torch

    from cxr.inference.export import export_model

    path = export_model(model, folder / "model.onnx", example)
    return OnnxClassifier(path, threads=torch.get_num_threads())


def measure_throughput(
    jobs: Sequence[Job], table: Table, cache: dict[str, float], batch: int = 16
) -> dict[str, dict]:
    """Inference images/s of each row's model (eval mode, float32, batch ``batch``, random input): eager
    PyTorch on the CPU and, where there is one, the GPU, and the exported model on ONNX Runtime (CPU).

    Measured afresh each time the tables are written, every row in the same pass, so that the rows of
    a table are compared under the same load (a cache kept across calls mixed rows trained, and
    measured, hours apart). ``cache`` (``"<run id>/<path>" -> images/s``) lives for one call of
    :func:`write_outputs`, where tables share runs."""
    import tempfile

    import torch
    from torch.utils import benchmark

    from cxr.config.compose import compose

    paths = ["cpu", "onnx"] + (["cuda"] if torch.cuda.is_available() else [])
    columns = {"cpu": "CPU img/s (eager)", "onnx": "CPU img/s (ONNX Runtime)", "cuda": "GPU img/s"}
    out: dict[str, dict] = {}
    for job in {j.row: j for j in jobs if not j.skip}.values():
        cfg = None
        for path in paths:
            key = f"{job.run_id}/{path}"
            if key not in cache:
                from hydra.utils import instantiate

                cfg = cfg or compose(job.overrides(table.replicate_key))
                size, chans = int(cfg.datamodule.image_size), int(cfg.model.get("in_chans", 1))
                model = instantiate(cfg.model, _convert_="all").eval()
                device = "cuda" if path == "cuda" else "cpu"
                x = torch.randn(batch, chans, size, size, device=device)
                with tempfile.TemporaryDirectory() as tmp:
                    runner = _onnx_runtime_model(model, x, Path(tmp)) if path == "onnx" else model.to(device)
                    if runner is None:
                        continue
                    timer = benchmark.Timer("model(x)", globals={"model": torch.no_grad()(runner), "x": x})
                    cache[key] = batch / timer.blocked_autorange(min_run_time=1.0).median
            out.setdefault(job.row, {})[columns[path]] = cache[key]
        out[job.row].setdefault(columns["cuda"], "n/a (no GPU)")
    return out


def _machine() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()} CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), {gpu}"
    )


def caption(table: Table, profile: Profile, data_root: Path, command: str, data_note: str = "") -> str:
    reps = profile.seeds if table.task == "classification" else profile.folds
    what = "seeds" if table.task == "classification" else "validation folds"
    return (
        f"**{table.title}.** Ours: mean ± std over {what} {', '.join(map(str, reps))} (runs = finished / "
        f"planned); {profile.description}; data `{data_root}`{f' ({data_note})' if data_note else ''}. {table.paper_note[:1].upper()}{table.paper_note[1:]}. "
        f"Made by `{command}`."
    )


def _quality_figure(table: Table, runs: dict, out: Path, data: Path, cache_dir: Path | None) -> list[Path]:
    """Classification: ROC, precision-recall and confusion matrices of every row. Detection: a grid
    of validation images with labels and detections of the table's first finished run (its last
    epoch's checkpoint)."""
    if table.task == "classification":
        from cxr.reporting.classification_plots import classification_figure

        figure = classification_figure(runs, out / f"{table.name}_roc_pr_confusion.png", table.title)
        return [figure] if figure else []
    from cxr.reporting.detection_plots import detection_grid

    for folders in runs.values():
        for folder in filter(None, folders):
            ckpts = kept_checkpoints(folder)
            if (folder / "metrics.json").is_file() and ckpts:
                ckpt = ckpts[best_epochs(folder)[0]]  # the epoch the tables report
                title = f"{table.title}: {folder.name}, {ckpt.stem} (best val/rsna_map)"
                return [
                    detection_grid(ckpt, data, out / f"{table.name}_grid.png", title, cache_dir=cache_dir)
                ]
    return []


def write_outputs(
    tables: Sequence[Table],
    jobs: Sequence[Job],
    profile: Profile,
    out: Path,
    data_root: Path,
    command: str,
    cache_dir: Path | None,
    data_note: str = "",
) -> list[Path]:
    """Tables (Markdown + CSV), curves and the NMS figure for ``tables``; the runs index; ``tables.md``.
    ``data_note`` says in every caption what the data is (e.g. which release, which split)."""
    import pandas as pd

    from cxr.reporting import plots
    from cxr.reporting.tables import build_table, postprocess_table, write_table

    runs_dir, written, sections = out / "runs", [], []
    throughput: dict[str, float] = {}
    for table in tables:
        table_jobs = [j for j in jobs if j.table == table.name]
        runs = {  # a job not run (no run id) counts as a missing replicate: a gap, runs 0/N
            row.label: [runs_dir / j.run_id if j.run_id else None for j in table_jobs if j.row == row.label]
            for row in table.rows
        }
        extra = measure_throughput(table_jobs, table, throughput) if table.throughput else {}
        for job in table_jobs:  # the encoder that ran, where a profile swaps in a stand-in
            encoder = next(
                (o.partition("=")[2] for o in job.row_overrides if o.startswith("model.encoder=")), None
            )
            if encoder is not None:
                extra.setdefault(job.row, {})["timm encoder"] = encoder
        numbers, shown = build_table(table, runs, extra)
        text = caption(table, profile, data_root, command, data_note) + weights_note(table, table_jobs)
        if table.throughput:
            text += (
                " Throughput: inference, float32, batch 16, random input; eager PyTorch and the model "
                f"`cxr-export` writes on ONNX Runtime (what `cxr-predict` runs on a CPU), on {_machine()}."
            )
        written += write_table(numbers, shown, text, out, table.name)
        sections.append((out / f"{table.name}.md").read_text())
        figure = plots.training_curves(runs, table.curves, out / f"{table.name}_curves.png", table.title)
        written += [figure] if figure else []
        written += _quality_figure(table, runs, out, data_dir(data_root, table.task), cache_dir)
        if table.postprocess_single:
            single = table.postprocess_single
            sweep = postprocess_sweep(
                table_jobs, runs_dir, data_dir(data_root, "detection"), single, cache_dir
            )
            numbers, shown = postprocess_table(sweep)
            text = (
                f"**Gabruseva et al.: post-processing** of the augmentation table's models: validation RSNA "
                f"mAP at the best NMS IoU and score thresholds of each fold (chosen on that fold, so "
                f"optimistic), mean ± std over folds. Each fold's checkpoint is chosen without this sweep: "
                f"the epoch (0-based, per fold in the table) with the best logged `{MONITOR}` of that run, "
                f"as Table 3's best epoch (also on the validation fold). Rows: the single model "
                f"({single}) at that epoch; a checkpoint ensemble, its {CHECKPOINT_ENSEMBLE} best logged "
                f"epochs; the ensemble of the models trained on the same fold with different augmentations, "
                f"each at its best logged epoch (a fold ensemble cannot be scored on cross-validation "
                f"folds: each image trained three of the four fold models). Ensembles pool the members' "
                f"raw detections before one NMS and average their scores (a member without a match "
                f"counts 0). Every row is scored as the per-epoch validation (the authors' scorer): the "
                f"model's prefilter (score > 0.025), NMS, then each image's boxes under half its top score "
                f"dropped, then the score threshold; at NMS IoU 0.05 (the authors') the single model's "
                f"score is its logged `{MONITOR}`. Box shrink: ×{SHRINK:g} about each box centre after "
                f"NMS. Fig. 8 (`gabruseva2020_fig8_nms.png`): every epoch of the single model; "
                f"`gabruseva2020_nms_sweep.csv`: the whole sweep (`in_table` marks this table's rows). "
                f"Runs: {profile.description}; data `{data_root}`{f' ({data_note})' if data_note else ''}. "
                f"Paper: Fig. 8 only, no table. Made by `{command}`."
            )
            written += write_table(numbers, shown, text, out, "gabruseva2020_postprocess")
            sections.append((out / "gabruseva2020_postprocess.md").read_text())
            sweep.to_csv(out / "gabruseva2020_nms_sweep.csv", index=False, float_format="%.6g")
            figure = plots.nms_curves(
                sweep,
                out / "gabruseva2020_fig8_nms.png",
                "mAP against NMS threshold (Gabruseva et al., Fig. 8)",
            )
            written += [out / "gabruseva2020_nms_sweep.csv"] + ([figure] if figure else [])
    index = pd.DataFrame(
        [
            {
                "table": j.table,
                "row": j.row,
                "replicate": j.replicate,
                "run_id": j.run_id,
                "status": j.skip.partition(":")[0] if j.skip else job_status(runs_dir / j.run_id),
            }
            for j in jobs
        ]
    )
    index.to_csv(out / "index.csv", index=False)
    (out / "tables.md").write_text(f"# Reproduced tables ({profile.name} profile)\n\n" + "\n".join(sections))
    return [*written, out / "index.csv", out / "tables.md"]
