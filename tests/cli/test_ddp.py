"""trainer=ddp: two CPU processes with the gloo backend train and test one tiny run."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_ddp_two_cpu_processes(ped_cxr_dir, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "cxr.cli.train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "model=depthwise_cnn",
        f"datamodule.data_dir={ped_cxr_dir}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    # a hung process group must fail the test, not CI: hard timeout
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text() + done.stdout + done.stderr
    assert "distributed_backend=gloo" in log
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log
    assert "[rank: 1]" in log  # both ranks log to the run's train.log, but only rank 0 writes metrics.json
    assert (tmp_path / "run" / "train.log").read_text().count("metrics written to") == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"test/recall_macro", "train_time_s"} <= set(metrics)
    assert not (tmp_path / "logs").exists()  # the second rank reused the run folder, no stray one
