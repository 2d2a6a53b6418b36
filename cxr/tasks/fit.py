"""Fit and test a task with a Lightning Trainer and collect the flat metrics a run folder keeps.

:func:`fit_and_test` is what ``cxr-train`` does between building the objects and writing
``metrics.json``: fit (resuming from a checkpoint), test the best checkpoint, and gather the
``val/``, ``best/`` and ``test/`` figures as plain floats, plus the confusion matrices the task keeps.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cxr.tasks.callbacks.nonfinite import NonFiniteGuard
from cxr.tasks.memory import out_of_memory_message

log = logging.getLogger(__name__)


def scalars(metrics: dict) -> dict[str, float]:
    """The one-element entries of ``metrics`` as floats (tensors included)."""
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


def _callback(trainer: pl.Trainer, kind: type):
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


@contextlib.contextmanager
def _oom_advice(batch_size: int | None, image_size: int | None) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError as err:
        raise torch.OutOfMemoryError(out_of_memory_message(err, batch_size, image_size)) from err


def fit_and_test(
    trainer: pl.Trainer,
    task: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    *,
    ckpt_path: str | None,
    train: bool = True,
    test: bool = True,
    batch_size: int | None = None,
    image_size: int | None = None,
) -> dict:
    """Fit (from ``ckpt_path`` when given) and/or test the best checkpoint; return the run's metrics.

    Returns ``val/*`` and ``best/<monitor>`` after fitting, ``test/*`` after testing,
    ``train_time_s``, ``epochs``, ``nonfinite_skipped`` and ``<stage>/confusion_matrix`` (lists)
    for every stage the task kept one for (``task.confusion``).
    """
    metrics: dict = {}
    checkpoint = _callback(trainer, ModelCheckpoint)
    with _oom_advice(batch_size, image_size):
        if train:
            start = time.perf_counter()
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            if not any(k.startswith("val/") for k in trainer.callback_metrics):
                # resumed a finished run: nothing was trained, so measure the final weights on val again
                trainer.validate(task, datamodule=datamodule, verbose=False)
            guard = _callback(trainer, NonFiniteGuard)
            metrics["train_time_s"] = time.perf_counter() - start
            metrics["epochs"] = trainer.current_epoch
            metrics["nonfinite_skipped"] = guard.skipped if guard is not None else 0
            metrics.update(
                scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
            )
            if checkpoint is not None and checkpoint.best_model_score is not None:
                metrics[f"best/{checkpoint.monitor}"] = float(checkpoint.best_model_score)
        if test:
            best = checkpoint.best_model_path if train and checkpoint is not None else ""
            if not train and ckpt_path is None:
                log.warning("train=false and no checkpoint: testing an untrained model")
            trainer.test(task, datamodule=datamodule, ckpt_path=best or ckpt_path, weights_only=True)
            metrics.update(
                scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
            )
    for stage, matrix in task.confusion.items():
        metrics[f"{stage}/confusion_matrix"] = matrix
    return metrics
