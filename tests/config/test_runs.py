"""Run identity: which config keys change a run's id, the run folder's ``config.yaml`` keeping it,
``skip_finished`` and the finished / interrupted / new status of a run folder."""

from omegaconf import OmegaConf

from cxr.cli.train import run
from cxr.config.compose import compose
from cxr.config.runs import config_fingerprint, finished_metrics, job_status, run_id


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


def test_run_id_follows_what_a_run_computes(tmp_path):
    base = ["experiment=go2020", "trainer=cpu"]
    same = run_id(compose(base))
    assert run_id(compose(base)) == same and len(same) == 12
    # where it writes, caches and logs, and how many loader workers: same run
    assert (
        run_id(
            compose(
                [
                    *base,
                    "paths.log_dir=/elsewhere",
                    "datamodule.num_workers=7",
                    "datamodule.cache_dir=/c",
                    "logger=tensorboard",
                    "ckpt_path=null",
                ]
            )
        )
        == same
    )
    # anything that changes the result: another run
    for other in ("seed=1", "augment=paper_da", "task.optimizer.lr=0.001", "datamodule.image_size=64"):
        assert run_id(compose([*base, other])) != same, other
    fingerprint = config_fingerprint(compose(base))
    assert fingerprint["model._target_"] == "cxr.models.PlainCNN" and fingerprint["seed"] == 0
    assert not any(k.startswith(("hydra", "paths", "callbacks")) for k in fingerprint)


def test_the_run_folders_config_has_the_same_id_and_skip_finished_skips(ped_cxr_dir, tmp_path, monkeypatch):
    cfg = compose(_tiny(ped_cxr_dir, tmp_path), output_dir=tmp_path / "run")
    assert job_status(tmp_path / "run") == "new"
    metrics = run(cfg)
    assert run_id(OmegaConf.load(tmp_path / "run" / "config.yaml")) == run_id(cfg)
    assert finished_metrics(tmp_path / "run", cfg)["params"] == metrics["params"]
    assert job_status(tmp_path / "run") == "finished"

    import pytorch_lightning as pl

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(pl.Trainer, "fit", no_training)
    again = run(compose(_tiny(ped_cxr_dir, tmp_path, "++skip_finished=true"), output_dir=tmp_path / "run"))
    assert again["params"] == metrics["params"] and again["test/recall"] == metrics["test/recall"]
    # another config in the same folder is not "finished": it would run
    assert finished_metrics(tmp_path / "run", compose(_tiny(ped_cxr_dir, tmp_path, "seed=3"))) is None


def test_interrupted_run_is_recognised(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert job_status(tmp_path) == "interrupted"


def test_metrics_json_is_strict_json_with_undefined_metrics_as_null():
    import json

    from cxr.config.runs import metrics_json

    metrics = {"test/auroc": float("nan"), "test/recall": 0.5, "test/confusion_matrix": [[1, 0], [0, 2]]}
    constants = []
    assert json.loads(metrics_json(metrics), parse_constant=constants.append) == {
        "test/auroc": None,
        "test/recall": 0.5,
        "test/confusion_matrix": [[1, 0], [0, 2]],
    }
    assert constants == []  # no NaN / Infinity tokens, which strict JSON parsers reject
