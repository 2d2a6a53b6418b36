"""The resume point: :class:`ResumeCheckpoint` keeps ``<dirpath>/last.ckpt`` current and carries the RNG states.

It writes every N steps or minutes, at each epoch end, on SIGTERM and at the end of training, so a
run resumed from it (``ckpt_path=last``) draws the same dropout masks as one never interrupted.
Together with :class:`~cxr.data.resumable.ResumableLoader` it resumes mid-epoch exactly. Every
checkpoint of the run is written atomically (:class:`~cxr.tasks.checkpoint_io.AtomicCheckpointIO`,
installed on the trainer here). The epoch a run resumed in the middle of is logged with
``train/partial_epoch`` = 1: its epoch-level training figures cover only the batches after the
restart (every other epoch logs 0).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from cxr.tasks.checkpoint_io import AtomicCheckpointIO

log = logging.getLogger(__name__)


def rng_states() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, random) in tensors and plain containers, weights_only-safe."""
    # the legacy global state is what third-party code draws from; cxr itself uses Generators
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`; CUDA states are restored only onto the same number of devices."""
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = states["numpy"]
    np.random.set_state(  # noqa: NPY002 (restores the legacy global state Lightning seeds)
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class ResumeCheckpoint(Checkpoint):
    """Writes ``<dirpath>/<filename>``, the full training state to continue from, at safe points.

    Saved every ``every_n_train_steps`` optimizer steps and/or every ``every_n_minutes`` (0 = off), at
    each epoch end (after validation and the best-checkpoint update), when SIGTERM arrives and at the
    end of training. At setup it replaces Lightning's default checkpoint writer with
    :class:`~cxr.tasks.checkpoint_io.AtomicCheckpointIO` (a temporary file in the same folder, fsync,
    ``os.replace``), so a kill or a full disk during any save leaves the previous file intact. A
    :class:`~pytorch_lightning.callbacks.Checkpoint`, so Lightning runs it after other callbacks
    (``ModelCheckpoint`` included, in config order). Logs ``train/partial_epoch`` at each epoch end:
    1 for the epoch a resumed run restarted in the middle of, else 0.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_train_steps: int = 0,
        every_n_minutes: float = 0.0,
        filename: str = "last.ckpt",
    ) -> None:
        if every_n_train_steps < 0 or every_n_minutes < 0:
            raise ValueError(
                f"every_n_train_steps and every_n_minutes must be >= 0, got {every_n_train_steps}, "
                f"{every_n_minutes}"
            )
        self.path = Path(dirpath) / filename
        self.every_n_train_steps, self.every_n_minutes = int(every_n_train_steps), float(every_n_minutes)
        self._last_time = time.monotonic()
        self._saved_step: int | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._batches_done = 0  # of the current epoch, when last saved; stored in the checkpoint
        self._partial_epoch: int | None = None  # the epoch this run resumed in the middle of

    def _save(self, trainer: pl.Trainer, batches_done: int = 0) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        self._batches_done = batches_done
        trainer.save_checkpoint(self.path)
        self._saved_step, self._last_time = trainer.global_step, time.monotonic()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default, not a chosen one
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Restored here, not in load_state_dict: the train loader has been set up by now, so nothing
        # between this point and the next batch draws from the global RNGs, as in the original run.
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None
            if self._batches_done:
                self._partial_epoch = trainer.current_epoch
                log.warning(
                    "resumed %d batch(es) into epoch %d: its epoch-level training figures cover the "
                    "batches after the restart only (train/partial_epoch = 1 in the log)",
                    self._batches_done,
                    trainer.current_epoch,
                )
            log.info(
                "resumed at global step %d (epoch %d) with the saved RNG states",
                trainer.global_step,
                trainer.current_epoch,
            )
        self._last_time = time.monotonic()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # accumulated gradients are not part of a checkpoint
        step = trainer.global_step
        due = self.every_n_train_steps > 0 and step % self.every_n_train_steps == 0
        due |= self.every_n_minutes > 0 and time.monotonic() - self._last_time >= 60 * self.every_n_minutes
        if (due or trainer.received_sigterm) and step != self._saved_step:
            self._save(trainer, batches_done=batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        partial = float(trainer.current_epoch == self._partial_epoch)
        pl_module.log("train/partial_epoch", partial, on_step=False, on_epoch=True, batch_size=1)
        self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:  # stopped mid-epoch (max_steps)
            self._save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states(), "batches_done": self._batches_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")
        self._batches_done = int(state_dict.get("batches_done", 0))
