"""Training guards: NaN/inf stops (naming the step) or skips (counted), OOM advice, the resume-point writer."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from cxr.cli.train import run
from cxr.config.compose import compose
from cxr.data.transforms import RadiographTransform
from cxr.tasks.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError
from cxr.tasks.callbacks.resume import ResumeCheckpoint
from cxr.tasks.memory import out_of_memory_message

BAD = 13  # sample whose input is NaN: batch 3 of 8 at batch size 4


def _samples(bad: set[int] | None = None, n: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    for i in bad if bad is not None else {BAD}:
        x[i] = float("nan")
    return [{"x": x[i], "y": x[i].sum().nan_to_num(), "index": i} for i in range(n)]


class Toy(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return F.mse_loss(self.net(batch["x"]).squeeze(1), batch["y"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Recorder(pl.Callback):
    """Parameters and buffers after every batch of epoch 0."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.states[batch_idx] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _fit(
    tmp_path: Path,
    callbacks: list,
    samples: list[dict] | None = None,
    epochs: int = 1,
    module: pl.LightningModule | None = None,
) -> pl.LightningModule:
    module = module or Toy()
    writes = any(
        isinstance(c, ResumeCheckpoint) for c in callbacks
    )  # otherwise Lightning adds a ModelCheckpoint
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=writes,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(module, DataLoader(samples if samples is not None else _samples(), batch_size=4))
    return module


def test_stop_names_step_batch_and_samples_and_keeps_the_weights(tmp_path: Path) -> None:
    recorder, module = Recorder(), Toy()
    with pytest.raises(NonFiniteLossError) as err:
        _fit(tmp_path, [NonFiniteGuard("stop"), recorder], module=module)
    text = str(err.value)
    assert text.startswith(
        "non-finite loss (nan) at global step 3 (epoch 0, batch 3), dataset indices [12, 13, 14, 15]"
    )
    assert "callbacks.nonfinite.mode=skip" in text and "\n" not in text
    params = dict(module.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in recorder.states[2].items() if k in params)


def test_a_non_finite_gradient_with_a_finite_loss_also_stops(tmp_path: Path) -> None:
    class SqrtAtZero(Toy):
        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            return loss + torch.sqrt(self.net[0].bias[0] * 0)  # sqrt'(0) = inf: loss finite, gradient NaN

    with pytest.raises(
        NonFiniteLossError, match=r"^non-finite gradient at global step 0 \(epoch 0, batch 0\)"
    ):
        _fit(tmp_path, [NonFiniteGuard("stop")], _samples(set()), module=SqrtAtZero())


def test_skip_drops_the_step_restores_batch_norm_and_counts(tmp_path: Path, caplog) -> None:
    recorder, guard = Recorder(), NonFiniteGuard("skip")
    with caplog.at_level(logging.WARNING, logger="cxr.tasks.callbacks.nonfinite"):
        module = _fit(tmp_path, [guard, recorder], epochs=2)
    assert guard.skipped == 2  # one bad batch per epoch
    for key, value in recorder.states[3].items():  # the skipped batch changed nothing, buffers included
        assert torch.equal(value, recorder.states[2][key]), key
    assert not torch.equal(recorder.states[4]["net.0.weight"], recorder.states[3]["net.0.weight"])
    assert all(torch.isfinite(v).all() for v in module.state_dict().values())
    assert module.trainer.callback_metrics["train/nonfinite_skipped"] == 1.0
    assert "skipped a batch with a non-finite loss (nan) at global step 3 (epoch 0, batch 3)" in caplog.text
    assert "epoch 1: skipped 1 batch(es) with a non-finite loss or gradient (2 in total)" in caplog.text


def test_skip_gives_up_when_every_batch_is_bad(tmp_path: Path) -> None:
    with pytest.raises(
        NonFiniteLossError, match=r"in 3 consecutive batches, the last at global step 2 .*diverged"
    ):
        _fit(tmp_path, [NonFiniteGuard("skip", max_consecutive_skips=3)], _samples(set(range(32))))


def test_off_lets_nan_through(tmp_path: Path) -> None:
    module = _fit(tmp_path, [NonFiniteGuard("off")])
    assert not torch.isfinite(module.net[0].weight).all()


def test_bad_guard_settings() -> None:
    with pytest.raises(
        ValueError, match=r"callbacks\.nonfinite\.mode must be one of \('stop', 'skip', 'off'\), got 'halt'"
    ):
        NonFiniteGuard("halt")
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        NonFiniteGuard("skip", max_consecutive_skips=0)


def _overrides(data_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"datamodule.data_dir={data_dir}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=1",
        "model.widths=[8,8,8,8,8]",
        "model.hidden=8",
        *extra,
    ]


def test_guards_are_wired_through_the_config(ped_cxr_dir: Path, tmp_path: Path, monkeypatch) -> None:
    real = RadiographTransform.__call__

    def poisoned(self, image, boxes=None):  # every input NaN: the very first loss is NaN
        tensor, boxes = real(self, image, boxes)
        return torch.full_like(tensor, float("nan")), boxes

    monkeypatch.setattr(RadiographTransform, "__call__", poisoned)
    cfg = compose(_overrides(ped_cxr_dir, tmp_path), output_dir=tmp_path / "stop")
    with pytest.raises(
        NonFiniteLossError,
        match=r"^non-finite loss \(nan\) at global step 0 \(epoch 0, batch 0\), "
        r"dataset indices \[",
    ):
        run(cfg)
    cfg = compose(
        _overrides(
            ped_cxr_dir,
            tmp_path,
            "callbacks.nonfinite.mode=skip",
            "callbacks.nonfinite.max_consecutive_skips=2",
        ),
        output_dir=tmp_path / "skip",
    )
    with pytest.raises(NonFiniteLossError, match="in 2 consecutive batches"):
        run(cfg)


def test_out_of_memory_suggests_a_smaller_batch(ped_cxr_dir: Path, tmp_path: Path, monkeypatch) -> None:
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)\nmore"
        )

    monkeypatch.setattr(pl.Trainer, "fit", oom)
    with pytest.raises(torch.OutOfMemoryError) as err:
        run(compose(_overrides(ped_cxr_dir, tmp_path), output_dir=tmp_path / "run"))
    assert str(err.value) == (
        "out of device memory with datamodule.batch_size=8, datamodule.image_size=32: retry "
        "with datamodule.batch_size=4 (or trainer.precision=bf16-mixed where supported) "
        "[CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)]"
    )
    assert "smaller datamodule.image_size" in out_of_memory_message(
        RuntimeError("x"), batch_size=1, image_size=512
    )


class _SpyCheckpoint(ResumeCheckpoint):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saved_at: list[int] = []

    def _save(self, trainer: pl.Trainer, batches_done: int = 0) -> None:
        super()._save(trainer, batches_done)
        self.saved_at.append(trainer.global_step)


def test_resume_point_is_written_every_n_steps_and_at_epoch_end(tmp_path: Path) -> None:
    spy = _SpyCheckpoint(tmp_path / "checkpoints", every_n_train_steps=3)
    _fit(tmp_path, [spy], _samples(set()), epochs=2)
    assert spy.saved_at == [3, 6, 8, 9, 12, 15, 16]  # 8 batches per epoch; steps 3k, then each epoch end
    assert torch.load(spy.path, weights_only=True)["global_step"] == 16


def test_resume_point_is_written_when_sigterm_arrives(tmp_path: Path) -> None:
    class Terminate(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 4:
                os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler or `kill` would

    spy = _SpyCheckpoint(tmp_path / "checkpoints")
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException, after the batch's callbacks ran
        _fit(tmp_path, [Terminate(), spy], _samples(set()))
    assert spy.saved_at == [5]
    assert torch.load(spy.path, weights_only=True)["global_step"] == 5
