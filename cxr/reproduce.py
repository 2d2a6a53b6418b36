"""``make reproduce-tables`` / ``cxr-reproduce``: every table of both papers, ours beside theirs.

For each table of :data:`cxr.tables.TABLES` the rows are run through Hydra multirun (``cxr-train -m
experiment=<name> <row overrides> seed=0,1,... | datamodule.fold=0,1,...``), one process per group of
rows that differ in one key. Every job's folder is ``<out>/runs/<run id>``, the id being a hash of
the composed config minus what does not change the result (:func:`config_fingerprint`): a re-run
skips finished jobs (``metrics.json`` there), resumes interrupted ones from their
``checkpoints/last.ckpt``, and a row that two tables share runs once. Then the post-processing sweep
(NMS threshold, box shrinking, single model vs ensemble) runs on the augmentation table's
checkpoints, and the tables (Markdown + CSV, papers' numbers in their own columns) and figures are
written to ``<out>``.

Profiles (:data:`PROFILES`): ``smoke`` writes synthetic data in the real layouts and trains CPU-sized
runs (tiny images, 2 epochs, small encoders) so the whole pipeline runs in minutes; ``paper`` uses
the experiments' own settings (the papers') on ``$DATA_ROOT/chest_xray`` and ``$DATA_ROOT/rsna``.
Arguments after ``--`` are overrides for every job (``-- hydra/launcher=slurm trainer.devices=2``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxr.tables import TABLES, Table

log = logging.getLogger(__name__)

# Keys that do not change what a run computes: where it writes, logs and caches, and how it resumes.
IGNORED_KEYS = ("hydra", "name", "paths", "ckpt_path", "skip_finished", "logger", "callbacks",
                "trainer.enable_progress_bar", "trainer.log_every_n_steps", "datamodule.num_workers",
                "datamodule.cache_dir", "datamodule.pin_memory")


@dataclass(frozen=True)
class Profile:
    """How big the runs are. ``classification`` / ``detection``: overrides added to every job of
    that task; ``encoders``: paper encoder -> the encoder this profile runs instead."""

    name: str
    description: str
    classification: tuple[str, ...]
    detection: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...]
    encoders: Mapping[str, str] = field(default_factory=dict)
    synthetic: dict[str, int] | None = None


_QUIET = ("trainer.enable_progress_bar=false", "datamodule.num_workers=0")
PROFILES = {
    "smoke": Profile(
        name="smoke",
        description="smoke profile: synthetic phantom data in the real layouts (160 Ped-ChestXray JPEGs, "
                    "64 RSNA DICOMs), CPU, 2 epochs; classification 64 px, batch 16, Adam 1e-3; detection "
                    "128 px, batch 8, Adam 1e-3, FPN 32 channels, mobilenetv3_small_100 encoder instead of "
                    "SE-ResNeXt-101 (smaller stand-ins in the encoder table), folds 0-1 of 4. The numbers check the pipeline, not the papers",
        classification=("trainer=cpu", "trainer.max_epochs=2", "datamodule.image_size=64",
                        "datamodule.batch_size=16", "task.optimizer.lr=1e-3", *_QUIET),
        detection=("trainer=cpu", "trainer.max_epochs=2", "datamodule.image_size=128", "datamodule.batch_size=8",
                   "model.encoder=mobilenetv3_small_100", "model.fpn_channels=32", "task.optimizer.lr=1e-3",
                   *_QUIET),
        seeds=(0, 1), folds=(0, 1),
        encoders={"resnet34": "resnet10t", "resnet50": "resnet14t", "seresnext50_32x4d": "seresnext26ts",
                  "seresnext101_32x4d": "seresnext26t_32x4d", "mobilenetv3_large_100": "mobilenetv3_small_100"},
        synthetic={"ped_cxr": 160, "rsna": 64, "rsna_size": 256},
    ),
    "paper": Profile(
        name="paper",
        description="paper profile: the papers' settings (experiment configs) on the real datasets, one GPU "
                    "per run with bf16 mixed precision; classification seeds 0-2, detection folds 0-3 of 4",
        classification=("trainer=gpu", "trainer.enable_progress_bar=false"),
        detection=("trainer=gpu", "trainer.enable_progress_bar=false"),
        seeds=(0, 1, 2), folds=(0, 1, 2, 3),
    ),
}


# ---- run identity ----------------------------------------------------------------------------------

def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping) or not tree:
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in IGNORED_KEYS)


def config_fingerprint(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """What a run computes, as a flat ``{dotted key: resolved value}``: the config without
    :data:`IGNORED_KEYS`. Works on a composed config (with or without its ``hydra`` node, before the
    run folder is known) and on a run folder's resolved ``config.yaml``."""
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    for key in ("hydra", "name", "callbacks", "logger"):  # these may point at the run folder itself
        tree.pop(key, None)
    if isinstance(tree.get("paths"), dict):
        tree["paths"] = {k: v for k, v in tree["paths"].items() if k != "output_dir"}
    resolved = OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    return {k: v for k, v in _flatten(resolved).items() if not _ignored(k)}


def run_id(cfg: DictConfig | Mapping) -> str:
    """12 hex digits of the SHA-256 of :func:`config_fingerprint`: equal configs, equal ids."""
    text = json.dumps(config_fingerprint(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def finished_metrics(run_dir: str | Path, cfg: DictConfig | Mapping) -> dict | None:
    """The ``metrics.json`` of ``run_dir`` if it finished with the same fingerprint as ``cfg``, else None."""
    run_dir = Path(run_dir)
    metrics, config = run_dir / "metrics.json", run_dir / "config.yaml"
    if not (metrics.is_file() and config.is_file()):
        return None
    if run_id(OmegaConf.load(config)) != run_id(cfg):
        return None
    return json.loads(metrics.read_text())


def register_run_id_resolver() -> None:
    """``${cxr_run_id:}``: the run id of the config it sits in (``hydra.sweep.subdir=${cxr_run_id:}``)."""
    if not OmegaConf.has_resolver("cxr_run_id"):
        OmegaConf.register_new_resolver("cxr_run_id", lambda *, _root_: run_id(_root_))


# ---- planning -------------------------------------------------------------------------------------

def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def merge_overrides(*groups: Sequence[str]) -> list[str]:
    """Overrides in order, a later one replacing an earlier one of the same key (Hydra refuses two)."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged.pop(_key(override), None)
            merged[_key(override)] = override
    return list(merged.values())


@dataclass
class Job:
    """One run: ``fixed`` overrides (experiment, profile, data, extra), the row's and the replicate's."""

    table: str
    row: str
    fixed: tuple[str, ...]
    row_overrides: tuple[str, ...]
    replicate: str
    run_id: str = ""

    def overrides(self, replicate_key: str) -> list[str]:
        return merge_overrides(self.fixed, self.row_overrides, [f"{replicate_key}={self.replicate}"])


def _substitute(override: str, profile: Profile) -> str:
    key, _, value = override.partition("=")
    if key == "model.encoder" and value in profile.encoders:
        return f"{key}={profile.encoders[value]}"
    return override


def fixed_overrides(table: Table, profile: Profile, data_root: Path, cache_dir: Path | None,
                    extra: Sequence[str] = ()) -> tuple[str, ...]:
    folder = "chest_xray" if table.task == "classification" else "rsna"
    cache = [f"datamodule.cache_dir={cache_dir}"] if cache_dir is not None else []
    return tuple(merge_overrides([f"experiment={table.experiment}", *getattr(profile, table.task),
                                  f"datamodule.data_dir={data_root / folder}", *cache], extra))


def plan(tables: Sequence[Table], profile: Profile, data_root: Path, cache_dir: Path | None,
         extra: Sequence[str] = ()) -> list[Job]:
    """Every (table, row, replicate) job, with its run id from the config composed in-process."""
    from cxr.config import compose

    jobs = []
    for table in tables:
        fixed = fixed_overrides(table, profile, data_root, cache_dir, extra)
        for row in table.rows:
            row_overrides = tuple(_substitute(o, profile) for o in row.overrides)
            for rep in profile.seeds if table.task == "classification" else profile.folds:
                job = Job(table.name, row.label, fixed, row_overrides, str(rep))
                job.run_id = run_id(compose(job.overrides(table.replicate_key)))
                jobs.append(job)
    return jobs


def sweep_commands(table: Table, jobs: Sequence[Job]) -> list[list[str]]:
    """Hydra multirun override lists that cover ``jobs`` (all of one table): rows whose overrides
    set the same single key share one sweep over its values; the replicate key is always swept."""
    by_keys: dict[tuple[str, ...], dict[str, Job]] = {}
    for job in jobs:
        by_keys.setdefault(tuple(_key(o) for o in job.row_overrides), {}).setdefault(job.row, job)
    reps = ",".join(dict.fromkeys(j.replicate for j in jobs))
    commands = []
    for keys, rows in by_keys.items():
        first = next(iter(rows.values()))
        if len(keys) == 1:
            values = ",".join(dict.fromkeys(j.row_overrides[0].partition("=")[2] for j in rows.values()))
            commands.append(merge_overrides(first.fixed, [f"{keys[0]}={values}", f"{table.replicate_key}={reps}"]))
        else:
            commands += [merge_overrides(j.fixed, j.row_overrides, [f"{table.replicate_key}={reps}"])
                         for j in rows.values()]
    return commands


# ---- running --------------------------------------------------------------------------------------

def job_status(run_dir: Path) -> str:
    if (run_dir / "metrics.json").is_file():
        return "finished"
    return "interrupted" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "new"


def launch(overrides: Sequence[str], runs_dir: Path, log_file: Path) -> int:
    """One ``cxr-train -m`` multirun whose jobs land in ``runs_dir/<run id>``; output goes to ``log_file``."""
    cmd = [sys.executable, "-m", "cxr.train", "-m", *overrides, f"hydra.sweep.dir={runs_dir}",
           "hydra.sweep.subdir=${cxr_run_id:}", "++skip_finished=true"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode


def prepare_data(profile: Profile, data_root: Path, tasks: set[str]) -> None:
    """Smoke: write the synthetic datasets once. Paper: check the datasets are there."""
    folders = {"classification": data_root / "chest_xray", "detection": data_root / "rsna"}
    if profile.synthetic is None:
        missing = [str(folders[t]) for t in sorted(tasks) if not folders[t].is_dir()]
        if missing:
            raise SystemExit(f"cxr-reproduce: error: profile {profile.name} needs {' and '.join(missing)} "
                             "(set DATA_ROOT=<folder with chest_xray/ and rsna/>)")
        return
    from cxr.synth.ped_cxr import write_ped_cxr
    from cxr.synth.rsna import write_rsna

    if "classification" in tasks and not (folders["classification"] / "train").is_dir():
        write_ped_cxr(folders["classification"], n=profile.synthetic["ped_cxr"], seed=0, min_side=96, max_side=192)
    if "detection" in tasks and not (folders["detection"] / "stage_2_train_labels.csv").is_file():
        write_rsna(folders["detection"], n=profile.synthetic["rsna"], seed=0, size=profile.synthetic["rsna_size"],
                   n_test=0)


def measure_throughput(jobs: Sequence[Job], table: Table, runs_dir: Path, batch: int = 16) -> dict[str, dict]:
    """Inference images/s of each row's model (eval mode, float32, batch ``batch``, random input) on
    the CPU and, where there is one, the GPU; measured once per run id and kept in ``throughput.json``."""
    import torch
    from torch.utils import benchmark

    from cxr.config import compose

    cache_file = runs_dir / "throughput.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict[str, dict] = {}
    for job in {j.row: j for j in jobs}.values():
        cfg = None
        for device in devices:
            key = f"{job.run_id}/{device}"
            if key not in cache:
                from hydra.utils import instantiate

                cfg = cfg or compose(job.overrides(table.replicate_key))
                size, chans = int(cfg.datamodule.image_size), int(cfg.model.get("in_chans", 1))
                model = instantiate(cfg.model, _convert_="all").eval().to(device)
                x = torch.randn(batch, chans, size, size, device=device)
                timer = benchmark.Timer("model(x)", globals={"model": torch.no_grad()(model), "x": x})
                cache[key] = batch / timer.blocked_autorange(min_run_time=1.0).median
            out.setdefault(job.row, {})[f"{device.upper()} img/s"] = cache[key]
        out[job.row].setdefault("GPU img/s", out[job.row].pop("CUDA img/s", "n/a (no GPU)"))
    cache_file.write_text(json.dumps(cache, indent=2, sort_keys=True))
    return out


# ---- post-processing ------------------------------------------------------------------------------

NMS_GRID = tuple(round(0.1 * i, 1) for i in range(10))            # 0.0 .. 0.9
SCORE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))      # 0.05 .. 0.95
SHRINK = 0.875


def postprocess_sweep(jobs: Sequence[Job], runs_dir: Path, data_dir: Path, single_row: str,
                      cache_dir: Path | None = None) -> Any:
    """RSNA mAP over NMS and score thresholds, with and without box shrinking (×0.875 about the centre),
    for one model (``single_row``) and for the ensemble of all rows' models of the same fold, on each
    fold's validation images (every member predicts only its own validation fold, so no image is
    scored by a model that trained on it). Returns a DataFrame: fold, setting, nms_thresh,
    score_thresh, rsna_map; cached in ``runs_dir/postprocess-<hash>.csv``."""
    import pandas as pd

    from cxr.inference import load_members
    from cxr.metrics import rsna_map
    from cxr.postprocess import ensemble_images, shrink_boxes
    from cxr.tune import detection_predictions

    done = [j for j in jobs if (runs_dir / j.run_id / "metrics.json").is_file()]
    ckpts = {j.run_id: sorted((runs_dir / j.run_id / "checkpoints").glob("epoch*.ckpt")) for j in done}
    done = [j for j in done if ckpts[j.run_id]]
    if not done:
        return pd.DataFrame(columns=["fold", "setting", "nms_thresh", "score_thresh", "rsna_map"])
    key = hashlib.sha256(" ".join(sorted(j.run_id for j in done)).encode()).hexdigest()[:12]
    cache = runs_dir / f"postprocess-{key}.csv"
    if cache.is_file():
        return pd.read_csv(cache)
    members = load_members([ckpts[j.run_id][-1] for j in done])
    overrides = {"num_workers": 0, **({"cache_dir": str(cache_dir)} if cache_dir else {})}
    with contextlib.redirect_stderr(io.StringIO()):  # a progress bar per checkpoint would drown the summary
        predictions, targets = detection_predictions(members, data_dir, **overrides)
    n_models = len({j.row for j in done})
    settings = {f"single model ({single_row})": {k for k, j in enumerate(done) if j.row == single_row},
                f"ensemble of {n_models} models (one per augmentation)": set(range(len(done)))}
    rows = []
    for fold in sorted({j.replicate for j in done}):
        ids = [p for p in targets if any(done[k].replicate == fold for k, _ in predictions[p])]
        for setting, chosen in settings.items():
            preds = [[d for k, d in predictions[p] if k in chosen] for p in ids]
            if not all(preds):
                continue
            truth = [targets[p] for p in ids]
            for nms in NMS_GRID:
                merged = ensemble_images(preds, nms, "mean")
                for shrink in (None, SHRINK):
                    boxes = [d["boxes"] if shrink is None else shrink_boxes(d["boxes"], shrink) for d in merged]
                    label = setting if shrink is None else f"{setting} + box shrink {shrink:g}"
                    for score in SCORE_GRID:
                        kept = [{"boxes": b[d["scores"] >= score], "scores": d["scores"][d["scores"] >= score]}
                                for b, d in zip(boxes, merged, strict=True)]
                        rows.append((int(fold), label, nms, score, rsna_map(kept, truth)))
    frame = pd.DataFrame(rows, columns=["fold", "setting", "nms_thresh", "score_thresh", "rsna_map"])
    frame.to_csv(cache, index=False)
    return frame


# ---- outputs --------------------------------------------------------------------------------------

def _machine() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), {gpu}"


def caption(table: Table, profile: Profile, data_root: Path, command: str) -> str:
    reps = profile.seeds if table.task == "classification" else profile.folds
    what = "seeds" if table.task == "classification" else "validation folds"
    return (f"**{table.title}.** Ours: mean ± std over {what} {', '.join(map(str, reps))} (runs = finished / "
            f"planned); {profile.description}; data `{data_root}`. {table.paper_note[:1].upper()}{table.paper_note[1:]}. "
            f"Made by `{command}`.")


def write_outputs(tables: Sequence[Table], jobs: Sequence[Job], profile: Profile, out: Path, data_root: Path,
                  command: str, cache_dir: Path | None) -> list[Path]:
    """Tables (Markdown + CSV), curves and the NMS figure for ``tables``; the runs index; ``tables.md``."""
    import pandas as pd

    from cxr import plots
    from cxr.tables import build_table, postprocess_table, write_table

    runs_dir, written, sections = out / "runs", [], []
    for table in tables:
        table_jobs = [j for j in jobs if j.table == table.name]
        runs = {row.label: [runs_dir / j.run_id for j in table_jobs if j.row == row.label] for row in table.rows}
        extra = measure_throughput(table_jobs, table, runs_dir) if table.name == "go2020_models" else {}
        for job in table_jobs:  # the encoder that ran, where a profile swaps in a stand-in
            encoder = next((o.partition("=")[2] for o in job.row_overrides if o.startswith("model.encoder=")), None)
            if encoder is not None:
                extra.setdefault(job.row, {})["timm encoder"] = encoder
        numbers, shown = build_table(table, runs, extra)
        text = caption(table, profile, data_root, command)
        if table.name == "go2020_models":
            text += f" Throughput: inference, float32, batch 16, random input, on {_machine()}."
        written += write_table(numbers, shown, text, out, table.name)
        sections.append((out / f"{table.name}.md").read_text())
        figure = plots.training_curves(runs, table.curves, out / f"{table.name}_curves.png", table.title)
        written += [figure] if figure else []
        if table.name == "gabruseva2020_table3_augment":
            single = "heavy without rotation"
            sweep = postprocess_sweep(table_jobs, runs_dir, data_root / "rsna", single, cache_dir)
            numbers, shown = postprocess_table(sweep)
            text = (f"**Gabruseva et al.: post-processing** of the augmentation table's models: validation RSNA "
                    f"mAP at the best NMS and score thresholds of each fold (chosen on that fold, so optimistic), "
                    f"mean ± std over folds; box shrink ×{SHRINK:g} about each box centre after NMS. The ensemble "
                    f"averages the models trained on the same folds with different augmentations (a fold "
                    f"ensemble cannot be scored on cross-validation folds: each image trained three of the four "
                    f"fold models); {profile.description}; data `{data_root}`. Paper: Fig. 8 only, no table. "
                    f"Made by `{command}`.")
            written += write_table(numbers, shown, text, out, "gabruseva2020_postprocess")
            sections.append((out / "gabruseva2020_postprocess.md").read_text())
            sweep.to_csv(out / "gabruseva2020_nms_sweep.csv", index=False, float_format="%.6g")
            figure = plots.nms_curves(sweep, out / "gabruseva2020_fig8_nms.png",
                                      "mAP against NMS threshold (Gabruseva et al., Fig. 8)")
            written += [out / "gabruseva2020_nms_sweep.csv"] + ([figure] if figure else [])
    index = pd.DataFrame([{"table": j.table, "row": j.row, "replicate": j.replicate, "run_id": j.run_id,
                           "status": job_status(runs_dir / j.run_id)} for j in jobs])
    index.to_csv(out / "index.csv", index=False)
    (out / "tables.md").write_text(f"# Reproduced tables ({profile.name} profile)\n\n" + "\n".join(sections))
    return [*written, out / "index.csv", out / "tables.md"]


# ---- command line ---------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cxr-reproduce", description=__doc__.splitlines()[0],
                                     epilog="Overrides after -- go to every job, e.g. -- hydra/launcher=slurm")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder with chest_xray/ and rsna/ (smoke default: logs/reproduce/data, generated)")
    parser.add_argument("--out", type=Path, default=None, help="default: experiments/results/<profile>")
    parser.add_argument("--tables", nargs="+", default=None, metavar="NAME",
                        help=f"only these tables: {', '.join(t.name for t in TABLES)}")
    parser.add_argument("--tables-only", action="store_true", help="train nothing; build tables from what ran")
    parser.add_argument("--dry-run", action="store_true", help="print the sweeps and the jobs' status, run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from cxr.tables import table_by_name

    profile = PROFILES[args.profile]
    tables = [table_by_name(n) for n in args.tables] if args.tables else list(TABLES)
    synthetic = profile.synthetic is not None
    data_root = args.data_root or (Path("logs/reproduce/data") if synthetic else None)
    if data_root is None:
        parser.error(f"--profile {profile.name} needs --data-root (DATA_ROOT=...) with chest_xray/ and rsna/")
    out = args.out or Path("experiments/results") / profile.name
    cache_dir = Path("logs/reproduce/cache") if synthetic else None
    runs_dir = out / "runs"
    command = f"make reproduce-tables PROFILE={profile.name}" + ("" if synthetic else " DATA_ROOT=...")
    start = time.perf_counter()

    if not args.dry_run and not args.tables_only:
        prepare_data(profile, data_root, {t.task for t in tables})
    jobs = plan(tables, profile, data_root, cache_dir, args.overrides)
    for table in tables:
        table_jobs = [j for j in jobs if j.table == table.name]
        status = [job_status(runs_dir / j.run_id) for j in table_jobs]
        pending = len(status) - status.count("finished")
        commands = sweep_commands(table, table_jobs)
        print(f"[{table.name}] {len(table_jobs)} runs: {status.count('finished')} finished, "
              f"{status.count('interrupted')} interrupted (resumed), {status.count('new')} new", flush=True)
        for overrides in commands:
            if args.dry_run:
                print("  cxr-train -m " + " ".join(overrides))
            elif pending and not args.tables_only:
                t0 = time.perf_counter()
                code = launch(overrides, runs_dir, runs_dir / "logs" / f"{table.name}.log")
                note = "" if code == 0 else f" — exit code {code}, see {runs_dir / 'logs' / (table.name + '.log')}"
                print(f"  sweep done in {time.perf_counter() - t0:.0f} s{note}", flush=True)
    if args.dry_run:
        return
    written = write_outputs(tables, jobs, profile, out, data_root, command, cache_dir)
    missing = sum(job_status(runs_dir / j.run_id) != "finished" for j in jobs)
    print(f"wrote {len(written)} files to {out} in {time.perf_counter() - start:.0f} s"
          + (f"; {missing} runs missing (gaps in the tables)" if missing else ""))


if __name__ == "__main__":
    main()
