"""Planning, sweeps, post-processing and the end-to-end driver of ``cxr-reproduce``; multirun job
folders named by run id (run identity itself: ``tests/test_runs.py``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxr.cli.train import run
from cxr.config.compose import compose
from cxr.config.runs import run_id
from cxr.reporting.reproduce.plan import Job, merge_overrides, plan, sweep_commands
from cxr.reporting.reproduce.profiles import PROFILES
from cxr.reporting.tables import TABLES, Metric, Row, Table, table_by_name


def _tiny(data_dir, tmp_path, *extra):
    return [
        f"datamodule.data_dir={data_dir}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        "trainer=debug",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


def test_merge_overrides_keeps_the_last_value_per_key():
    assert merge_overrides(["a=1", "b=2"], ["+a=3", "c=4"]) == ["b=2", "+a=3", "c=4"]


def test_sweeps_group_rows_by_key_and_sweep_the_replicates():
    table = Table(
        name="t",
        title="T",
        experiment="gabruseva2020",
        task="detection",
        metrics=(Metric("x", "x"),),
        rows=(
            Row("no head", ("model.global_head=false",)),
            Row("d0", ("model.global_dropout=0.0",)),
            Row("d5", ("model.global_dropout=0.5",)),
            Row("both", ("a=1", "b=2")),
        ),
    )
    jobs = [
        Job("t", r.label, ("experiment=x", "model.global_dropout=0.9"), r.overrides, str(f))
        for r in table.rows
        for f in (0, 1)
    ]
    commands = sweep_commands(table, jobs)
    assert commands == [
        ["experiment=x", "model.global_dropout=0.9", "model.global_head=false", "datamodule.fold=0,1"],
        ["experiment=x", "model.global_dropout=0.0,0.5", "datamodule.fold=0,1"],
        ["experiment=x", "model.global_dropout=0.9", "a=1", "b=2", "datamodule.fold=0,1"],
    ]


def test_plan_shares_rows_that_two_tables_have_in_common(tmp_path):
    tables = [table_by_name("go2020_table2"), table_by_name("go2020_models")]
    jobs = plan(tables, PROFILES["smoke"], tmp_path, tmp_path / "cache")
    assert len(jobs) == 2 * 2 + 3 * 2
    ids = {(j.table, j.row, j.replicate): j.run_id for j in jobs}
    for seed in ("0", "1"):
        assert ids["go2020_table2", "without DA", seed] == ids["go2020_models", "plain CNN", seed]
    assert len(set(ids.values())) == 8
    assert all("trainer=cpu" in j.overrides("seed") for j in jobs)


def test_every_encoder_named_by_a_table_or_profile_exists_in_timm():
    import timm

    names = {
        o.partition("=")[2]
        for t in TABLES
        for r in t.rows
        for o in r.overrides
        if o.startswith("model.encoder=")
    }
    names |= {v for p in PROFILES.values() for v in p.encoders.values()}
    names |= {
        o.partition("=")[2] for p in PROFILES.values() for o in p.detection if o.startswith("model.encoder=")
    }
    assert names and all(timm.is_model(n) for n in names), sorted(n for n in names if not timm.is_model(n))


@pytest.mark.slow
def test_multirun_names_job_folders_by_run_id_and_a_rerun_skips_them(ped_cxr_dir, tmp_path):
    overrides = _tiny(ped_cxr_dir, tmp_path, "model=depthwise_cnn")
    cmd = [
        sys.executable,
        "-m",
        "cxr.cli.train",
        "-m",
        *overrides,
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'runs'}",
        "hydra.sweep.subdir=${cxr_run_id:}",
        "++skip_finished=true",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {run_id(compose([*overrides, f"seed={s}"])) for s in (0, 1)}
    folders = {p.parent.name for p in (tmp_path / "runs").glob("*/metrics.json")}
    assert folders == expected
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.json")}
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    logs = "".join(Path(tmp_path / "runs" / f / "train.log").read_text() for f in expected)
    assert logs.count("skipped (skip_finished=true)") == 2
    assert json.loads(next(iter(stamps)).read_text())["params"] > 0


TINY = dict(
    description="tiny test profile",
    seeds=(0,),
    folds=(0,),
    synthetic=None,
    classification=(
        "trainer=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        "trainer.enable_progress_bar=false",
    ),
    detection=(
        "trainer=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "datamodule.image_size=64",
        "datamodule.batch_size=4",
        "datamodule.num_workers=0",
        "model.encoder=resnet18",
        "model.fpn_channels=16",
        "trainer.enable_progress_bar=false",
    ),
)


@pytest.mark.slow
def test_reproduce_end_to_end_then_a_rerun_launches_nothing(ped_cxr_dir, tmp_path, monkeypatch, capsys):
    from cxr.cli.reproduce import main
    from cxr.reporting.reproduce.profiles import Profile

    monkeypatch.setitem(PROFILES, "tiny", Profile(name="tiny", **TINY))
    args = [
        "--profile",
        "tiny",
        "--tables",
        "go2020_table2",
        "--data-root",
        str(ped_cxr_dir.parent),
        "--out",
        str(tmp_path / "out"),
    ]
    main(args)
    first = capsys.readouterr().out
    assert "2 new" in first and "sweep done" in first
    out = tmp_path / "out"
    table = (out / "go2020_table2.md").read_text()
    assert (
        "| without DA | 1/1 |" in table
        and "| with DA (paper_da + oversampling) | 1/1 |" in table
        and "tiny test profile" in table
    )
    assert (out / "go2020_table2_curves.png").is_file() and (out / "tables.md").is_file()
    index = (out / "index.csv").read_text().splitlines()
    assert len(index) == 3 and all(line.endswith(",finished") for line in index[1:])

    main(args)
    again = capsys.readouterr().out
    assert "2 finished" in again and "sweep done" not in again


@pytest.mark.slow
def test_postprocess_sweep_scores_every_epoch_of_trained_runs(rsna_dir, tmp_path):
    """cxr-train's run folders as the sweep reads them: per-epoch checkpoints, the CSV log (the rule
    itself, validation's scorer, is tested on hand-built checkpoints in test_postprocess.py)."""
    from cxr.reporting.reproduce.postprocess import postprocess_sweep
    from cxr.reporting.tables import postprocess_table

    jobs = []
    for row in ("none", "light"):
        overrides = merge_overrides(
            [
                "experiment=gabruseva2020",
                f"augment={row}",
                f"datamodule.data_dir={rsna_dir}",
                f"datamodule.cache_dir={tmp_path / 'c'}",
            ],
            TINY["detection"],
            ["trainer.max_epochs=2"],
        )
        job = Job("t", row, tuple(overrides), (), "0", run_id=f"run_{row}")
        run(compose(overrides, output_dir=tmp_path / "runs" / job.run_id))
        jobs.append(job)
    sweep = postprocess_sweep(jobs, tmp_path / "runs", rsna_dir, "none", cache_dir=tmp_path / "c")
    assert sweep["rsna_map"].between(0, 1).all() and set(sweep["fold"]) == {0}
    assert list((tmp_path / "runs").glob("postprocess-*.csv"))  # cached for the next call
    assert sorted(sweep.loc[sweep["setting"] == "single model (none)", "epoch"].unique()) == [0, 1]
    numbers, _ = postprocess_table(sweep)
    assert len(numbers) == 6  # single, checkpoint ensemble, augmentation ensemble; each ± box shrink
