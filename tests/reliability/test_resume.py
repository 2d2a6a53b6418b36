"""Resume: a run killed mid-epoch and re-run in its folder ends exactly like one never interrupted."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxr.cli.train import run
from cxr.config.compose import compose
from cxr.data.resumable import EpochSampler, ResumableLoader, split_key
from cxr.tasks.callbacks.resume import rng_states, set_rng_states

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
# cxr-train with extra callbacks that stop the process at a given step: Crash kills it (no cleanup,
# like SIGKILL), Term sends it SIGTERM (as a scheduler does)
STOPPING_CLI = """
import os, signal, sys
import pytorch_lightning as pl

class Crash(pl.Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            os._exit(3)

class Term(pl.Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGTERM)

from cxr.cli.train import main
sys.argv = ["cxr-train", *sys.argv[1:]]
main()
"""


class Numbers(torch.utils.data.Dataset):
    """Sample i is the number i; keys may be EpochSampler's (index, seed) pairs."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key) -> int:
        return split_key(key)[0]


def _batches(loader) -> list[list[int]]:
    return [[int(i) for i in batch] for batch in loader]


# --- the pieces ---------------------------------------------------------------------------------


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochSampler(50, seed=7), EpochSampler(50, seed=7)
    b.set_epoch(3)
    list(b)  # iterating other epochs first changes nothing
    b.set_epoch(0)
    first = list(a)
    assert first == list(b) and first == list(a)
    assert sorted(i for i, _ in first) == list(range(50))
    assert len({s for _, s in first}) == 50  # a distinct augmentation seed per position
    a.set_epoch(1)
    assert [i for i, _ in a] != [i for i, _ in first]
    assert [i for i, _ in EpochSampler(50, seed=8)] != [i for i, _ in first]
    a.set_epoch(0)
    a.skip(20)
    assert list(a) == first[20:] and len(a) == 50 and list(a) == first  # skip applies once


def test_under_ddp_each_process_keeps_its_share_of_the_same_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    single = list(EpochSampler(11, seed=5))
    shares = []
    for rank in range(3):
        monkeypatch.setattr(EpochSampler, "_shard", staticmethod(lambda rank=rank: (rank, 3)))
        sampler = EpochSampler(11, seed=5)
        shares.append(list(sampler))
        assert len(sampler) == len(shares[-1]) == 4  # ceil(11 / 3): padded by repeating the first items
    assert [shares[r][k] for k in range(4) for r in range(3)] == (single + single)[:12]


def test_weighted_draws_are_reproducible_and_follow_the_weights() -> None:
    weights = torch.tensor([1.0] * 90 + [9.0] * 10)  # the last ten drawn as often as the first ninety
    sampler = EpochSampler(100, seed=0, weights=weights, num_samples=4000)
    draws = [i for i, _ in sampler]
    assert draws == [i for i, _ in EpochSampler(100, seed=0, weights=weights, num_samples=4000)]
    assert len(draws) == 4000 and 0.45 < np.mean(np.array(draws) >= 90) < 0.55
    with pytest.raises(ValueError, match="weights has 3 entries for n=100"):
        EpochSampler(100, seed=0, weights=[1.0, 1.0, 1.0])


def test_loader_resumes_mid_epoch_with_the_remaining_batches(caplog) -> None:
    def loader(batch_size: int = 4) -> ResumableLoader:
        return ResumableLoader(Numbers(30), EpochSampler(30, seed=1), batch_size=batch_size, drop_last=True)

    full = loader()
    full.sampler.set_epoch(2)
    expected = _batches(full)
    assert len(expected) == len(full) == 7
    killed = loader()
    killed.sampler.set_epoch(2)
    it = iter(killed)
    seen = [[int(i) for i in next(it)] for _ in range(3)]
    state = killed.state_dict()
    assert seen == expected[:3] and state == {"epoch": 2, "batches": 3, "batch_size": 4}
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # what Lightning does before the epoch
    assert _batches(resumed) == expected[3:]
    assert resumed.state_dict() == {"epoch": 2, "batches": 7, "batch_size": 4}
    assert _batches(resumed) == expected  # the skip applied to one iteration only
    later = loader()  # a saved state from another epoch skips nothing
    later.load_state_dict(state)
    later.sampler.set_epoch(3)
    assert len(_batches(later)) == 7
    with caplog.at_level(logging.WARNING, logger="cxr.data.resumable"):
        loader(batch_size=5).load_state_dict(state)
    assert "resuming with batch_size 5 instead of 4" in caplog.text


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)  # noqa: NPY002 - the legacy global state is what is being saved
    torch.save({"rng": rng_states()}, tmp_path / "state.ckpt")
    expected = (torch.rand(5), random.random(), np.random.rand(3))  # noqa: NPY002
    torch.rand(100), random.random(), np.random.rand(7)  # noqa: NPY002 - move every generator on
    set_rng_states(torch.load(tmp_path / "state.ckpt", weights_only=True)["rng"])
    again = (torch.rand(5), random.random(), np.random.rand(3))  # noqa: NPY002
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1]
    np.testing.assert_array_equal(expected[2], again[2])


# --- end to end ---------------------------------------------------------------------------------


def _overrides(data_dir: Path, tmp_path: Path) -> list[str]:
    return [
        f"datamodule.data_dir={data_dir}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "model.widths=[8,8,8,8,8]",
        "model.hidden=8",
        "task.optimizer.lr=3e-3",
        "callbacks.last_checkpoint.every_n_train_steps=2",
    ]


def _cli(args: list[str], cwd: Path, script: str | None = None) -> subprocess.CompletedProcess:
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "cxr.cli.train"]
    return subprocess.run([*head, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def _results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith(("val/", "test/", "best/")) or k == "epochs"}


def _approx(results: dict) -> dict:
    """Floats to 1e-6 relative: the uninterrupted run trains in this process, the resumed one in a
    subprocess, whose thread count may differ and round sums otherwise; everything else exact."""
    return {k: pytest.approx(v, rel=1e-6) if isinstance(v, float) else v for k, v in results.items()}


@pytest.mark.slow
def test_killed_mid_epoch_then_rerun_in_its_folder_ends_like_an_uninterrupted_run(
    ped_cxr_dir: Path, tmp_path: Path, caplog
) -> None:
    overrides = _overrides(ped_cxr_dir, tmp_path)
    run(compose(overrides, output_dir=tmp_path / "a"))
    uninterrupted = json.loads((tmp_path / "a" / "metrics.json").read_text())

    folder = tmp_path / "b"
    killed = _cli(
        [
            *overrides,
            f"hydra.run.dir={folder}",
            "+callbacks.crash._target_=__main__.Crash",
            "+callbacks.crash.at_step=9",
        ],
        tmp_path,
        script=STOPPING_CLI,
    )
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert not (folder / "metrics.json").exists()
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    position = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert state["global_step"] == 8 and position["epoch"] == 1 and 0 < position["batches"] < 6  # mid-epoch

    resumed = _cli([*overrides, f"hydra.run.dir={folder}"], tmp_path)  # the same command, in the same folder
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {folder / 'checkpoints' / 'last.ckpt'}" in resumed.stdout + resumed.stderr
    metrics = json.loads((folder / "metrics.json").read_text())
    assert _results(metrics) == _approx(_results(uninterrupted))
    assert {"test/loss", "val/loss", "test/confusion_matrix", "best/val/loss"} <= set(metrics)

    # the CSV log holds every epoch, those before the interruption too, with the same values
    def epochs(run_dir: Path) -> list[tuple]:
        log = pd.read_csv(run_dir / "csv" / "metrics.csv").dropna(subset=["val/loss"])
        return [tuple(row) for row in log[["epoch", "step", "val/loss"]].itertuples(index=False)]

    assert len(epochs(tmp_path / "a")) == 2 and epochs(folder) == epochs(tmp_path / "a")

    # a finished run re-run in its folder trains no further; a changed setting is pointed out
    with caplog.at_level(logging.WARNING, logger="cxr.cli.train"):
        run(compose([*overrides, "task.optimizer.lr=1e-2"], output_dir=tmp_path / "a"))
    assert _results(json.loads((tmp_path / "a" / "metrics.json").read_text())) == _approx(
        _results(uninterrupted)
    )
    assert (
        "differs from the one it started with" in caplog.text
        and "task.optimizer.lr: 0.003 -> 0.01" in caplog.text
    )


@pytest.mark.slow
def test_sigterm_saves_the_resume_point_exits_143_and_the_resumed_epoch_is_marked_partial(
    ped_cxr_dir: Path, tmp_path: Path
) -> None:
    """Issue 14, item 9: a SIGTERM'd run must not look successful; the epoch it resumes in the middle
    of logs training figures of the batches after the restart only, and says so."""
    overrides = [*_overrides(ped_cxr_dir, tmp_path), "callbacks.last_checkpoint.every_n_train_steps=0"]
    folder = tmp_path / "run"
    stopped = _cli(
        [
            *overrides,
            f"hydra.run.dir={folder}",
            "+callbacks.term._target_=__main__.Term",
            "+callbacks.term.at_step=9",
        ],
        tmp_path,
        script=STOPPING_CLI,
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "stopped by SIGTERM after saving the resume point" in stopped.stdout + stopped.stderr
    assert not (folder / "metrics.json").exists()
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 9  # saved at the step the signal arrived, not only at the epoch end
    assert state["callbacks"]["ResumeCheckpoint"]["batches_done"] == 3

    resumed = _cli([*overrides, f"hydra.run.dir={folder}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (folder / "metrics.json").exists()
    log = pd.read_csv(folder / "csv" / "metrics.csv").dropna(subset=["train/partial_epoch"])
    assert dict(zip(log["epoch"], log["train/partial_epoch"], strict=True)) == {0: 0.0, 1: 1.0}
