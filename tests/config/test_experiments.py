"""Every experiment config composes and runs one fast_dev_run step; launchers and sweepers compose."""

import os
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from cxr.cli.train import run
from cxr.config.compose import CONFIG_DIR, compose
from cxr.reporting.reproduce.plan import merge_overrides
from cxr.reporting.reproduce.profiles import PROFILES
from cxr.reporting.tables import TABLES

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
DETECTION = {"gabruseva2020", "optuna_gabruseva2020"}


def _smoke(experiment, data_dir, tmp_path, *extra):
    """The experiment with the smoke profile's overrides for its task, on a test fixture, one batch."""
    task = "detection" if experiment in DETECTION else "classification"
    return merge_overrides(
        [f"experiment={experiment}"],
        getattr(PROFILES["smoke"], task),
        [
            f"datamodule.data_dir={data_dir}",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "trainer=debug",
            *extra,
        ],
    )


def test_every_table_has_its_experiment_and_every_experiment_is_known():
    assert {t.experiment for t in TABLES} <= set(EXPERIMENTS)
    assert DETECTION <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_keeps_the_papers_settings(experiment):
    cfg = compose([f"experiment={experiment}"])
    if experiment in DETECTION:
        assert cfg.datamodule.image_size == 512 and cfg.model._target_ == "cxr.models.RetinaNet"
        assert cfg.task.monitor == "val/rsna_map" and cfg.trainer.max_epochs == 12
    else:
        assert (cfg.datamodule.image_size, cfg.datamodule.batch_size, cfg.trainer.max_epochs) == (200, 10, 15)
        assert cfg.task.loss == "bce"
        assert experiment.startswith("optuna") or cfg.task.optimizer.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e not in DETECTION])
def test_classification_experiment_runs_one_step(experiment, ped_cxr_dir, tmp_path):
    metrics = run(compose(_smoke(experiment, ped_cxr_dir, tmp_path), output_dir=tmp_path / "run"))
    assert {"test/precision_macro", "test/recall_macro", "params", "flops"} <= set(metrics)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(DETECTION))
def test_detection_experiment_runs_one_step(experiment, rsna_dir, tmp_path):
    metrics = run(compose(_smoke(experiment, rsna_dir, tmp_path), output_dir=tmp_path / "run"))
    assert {"test/rsna_map", "val/rsna_map", "params"} <= set(metrics)


def test_slurm_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose(["hydra/launcher=slurm", "experiment=gabruseva2020"])
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 720
    plain = compose(["hydra/launcher=submitit_slurm"])
    assert plain.hydra.launcher._target_.endswith("SlurmLauncher")


@pytest.mark.parametrize(
    ("experiment", "direction"), [("optuna_go2020", "minimize"), ("optuna_gabruseva2020", "maximize")]
)
def test_optuna_sweeper_composes_with_the_monitored_direction(experiment, direction):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose([f"experiment={experiment}"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == direction
    for key in cfg.hydra.sweeper.params:  # every searched parameter is a key of the config
        assert OmegaConf.select(cfg, key) is not None, key


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_the_best(ped_cxr_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    # no task.optimizer.lr / datamodule.batch_size here: a command-line value pins a searched parameter
    overrides = [
        "experiment=optuna_go2020",
        f"datamodule.data_dir={ped_cxr_dir}",
        "datamodule.image_size=32",
        "datamodule.num_workers=0",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        "trainer=debug",
        "trainer.enable_progress_bar=false",
    ]
    cmd = [
        sys.executable,
        "-m",
        "cxr.cli.train",
        "-m",
        *overrides,
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"task.optimizer.lr", "model.drop_rate", "datamodule.batch_size"}
    assert result["best_value"] > 0  # a validation loss
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2


def test_an_experiment_can_set_run_level_values(tmp_path):
    """train.yaml's own values (name, seed, ...) come first in its defaults, so experiments override them."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nname: my_study\nseed: 7\n")
    cfg = compose([f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"])
    assert (cfg.name, cfg.seed) == ("my_study", 7)
    assert compose(["model=depthwise_cnn"]).name == "ped_cxr-depthwise_cnn"
